"""Creates the DynamoDB tables of template.yaml on the local endpoint (moto_server).

The key schema, attribute definitions, indexes and TTL come from the template itself, so the
local tables are the deployed ones; each table's local name is the value of the function
environment variable that refers to it (for example RATE_LIMIT_TABLE: !Ref RateLimitTable).
"""

import os
import sys

import boto3
import yaml


class CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Ref, !Sub, ...) as {"Fn": value}."""


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {suffix: value}


CfnLoader.add_multi_constructor("!", _tag)


def main(path):
    with open(path, encoding="utf-8") as f:
        template = yaml.load(f, Loader=CfnLoader)
    env_vars = template["Globals"]["Function"]["Environment"]["Variables"]
    names = {}
    for var, value in env_vars.items():
        if isinstance(value, dict) and "Ref" in value:
            names[value["Ref"]] = os.environ.get(var)
    client = boto3.client(
        "dynamodb",
        endpoint_url=os.environ["AWS_ENDPOINT_URL_DYNAMODB"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )
    existing = set(client.list_tables()["TableNames"])
    for logical, resource in template["Resources"].items():
        if resource["Type"] != "AWS::DynamoDB::Table":
            continue
        props = resource["Properties"]
        name = names.get(logical)
        if not name:
            sys.exit(f"no environment variable names table {logical}")
        if name in existing:
            continue
        args = {
            "TableName": name,
            "BillingMode": props["BillingMode"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
        }
        if "GlobalSecondaryIndexes" in props:
            args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        client.create_table(**args)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            client.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        print(f"    table {name} ({logical})")


if __name__ == "__main__":
    main(sys.argv[1])
