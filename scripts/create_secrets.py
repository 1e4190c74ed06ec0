"""Creates the Secrets Manager secrets of template.yaml on the local endpoint (moto_server).

    create_secrets.py TEMPLATE VALUES_FILE...  > ids.env

Which secrets, and their names, come from the template itself: every `<NAME>_ID` variable of a
function's environment names a secret, either the stack's own (`!Ref JwtSecret`, whose Name is
`${SecretsPrefix}/${Environment}/jwt-secret-key`) or one created outside the stack
(`!Sub ${SecretsPrefix}/${Environment}/stripe-secret-key`). SecretsPrefix is the template's
default and Environment is $ENVIRONMENT, so the local names are the deployed ones
(flowbotz/development/...). The value of `<NAME>_ID`'s secret is `<NAME>` in the VALUES_FILEs
(KEY=VALUE lines: the generated .env, config/local-secrets.env); a secret with no local value
is not created and its variable is left out, as the AI key is (chat then answers from its
offline provider in development). Prints `<NAME>_ID=<secret name>` for each secret created, the
lines the functions' environment gets instead of any value.
"""

import os
import sys

import boto3
import yaml

from create_tables import CfnLoader


def secret_names(template: dict, prefix: str, environment: str) -> dict[str, str]:
    """`<NAME>_ID` variable -> secret name, over every function's environment."""
    owned = {}
    for logical, res in template["Resources"].items():
        if res.get("Type") == "AWS::SecretsManager::Secret":
            owned[logical] = res["Properties"]["Name"]["Sub"]
    names = {}
    for res in template["Resources"].values():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        for var, value in res["Properties"].get("Environment", {}).get("Variables", {}).items():
            if not var.endswith("_ID") or not isinstance(value, dict):
                continue
            if set(value) == {"Ref"} and value["Ref"] in owned:
                pattern = owned[value["Ref"]]
            elif set(value) == {"Sub"} and isinstance(value["Sub"], str):
                pattern = value["Sub"]
            else:
                continue
            name = pattern.replace("${SecretsPrefix}", prefix).replace("${Environment}", environment)
            if "${" in name:
                sys.exit(f"{var}: cannot name the secret {pattern!r} locally")
            if names.setdefault(var, name) != name:
                sys.exit(f"{var} names two secrets: {names[var]} and {name}")
    return names


def read_values(paths: list[str]) -> dict[str, str]:
    values = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, value = line.split("=", 1)
                    values[key.strip()] = value.strip()
    return values


def main(template_path: str, value_paths: list[str]) -> None:
    with open(template_path, encoding="utf-8") as f:
        template = yaml.load(f, Loader=CfnLoader)
    prefix = template["Parameters"]["SecretsPrefix"]["Default"]
    environment = os.environ["ENVIRONMENT"]
    values = read_values(value_paths)
    client = boto3.client(
        "secretsmanager",
        endpoint_url=os.environ["AWS_ENDPOINT_URL_SECRETS_MANAGER"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )
    for var, name in sorted(secret_names(template, prefix, environment).items()):
        value = values.get(var.removesuffix("_ID"))
        if not value:
            print(f"    secret {name}: no local value for {var.removesuffix('_ID')}, not created ({var} unset)", file=sys.stderr)
            continue
        try:
            client.create_secret(Name=name, SecretString=value)
        except client.exceptions.ResourceExistsException:
            current = client.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")["SecretString"]
            if current != value:
                client.put_secret_value(SecretId=name, SecretString=value)
        print(f"    secret {name} ({var})", file=sys.stderr)
        print(f"{var}={name}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
