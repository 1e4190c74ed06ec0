"""Verifies the sender identity MAIL_FROM in the local SES (moto_server), so the functions'
SES v2 SendEmail from it is accepted as it is in a deployed account with a verified identity.

moto's SendEmail (v1 and v2) refuses a sender that is neither a verified address nor on a
verified domain ("Email address not verified"); SES v2 CreateEmailIdentity verifies it at once.
Usage: AWS_ENDPOINT_URL_SESV2=http://127.0.0.1:5005 MAIL_FROM=... create_mail_identity.py
"""

import os

import boto3


def main() -> None:
    sender = os.environ["MAIL_FROM"]
    client = boto3.client(
        "sesv2",
        endpoint_url=os.environ["AWS_ENDPOINT_URL_SESV2"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )
    existing = {i["IdentityName"] for i in client.list_email_identities().get("EmailIdentities", [])}
    if sender not in existing:
        client.create_email_identity(EmailIdentity=sender)
    print(f"verified sender identity {sender}")


if __name__ == "__main__":
    main()
