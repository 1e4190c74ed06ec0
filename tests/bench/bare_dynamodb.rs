//! The second baseline of `make bench`: the bare `lambda_http` function plus the shared crate's
//! DynamoDB client and one `UpdateItem` per event. Every function that talks to DynamoDB pays at
//! least this (the SDK's code, its TLS trust store at start-up, one round trip per request), so
//! the distance from it to a function is what the security pipeline and the handler add.
use aws_sdk_dynamodb::types::AttributeValue;
use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let table = std::env::var("RATE_LIMIT_TABLE").unwrap_or_else(|_| "flowbotz-rate-limits".into());
    let client =
        flowbotz_security::store::dynamodb::client(std::time::Duration::from_secs(1)).await;
    lambda_http::run(service_fn(move |_req: Request| {
        let (client, table) = (client.clone(), table.clone());
        async move {
            let status = match client
                .update_item()
                .table_name(table)
                .key("pk", AttributeValue::S("bench#bare-dynamodb".into()))
                .update_expression("SET #c = :one")
                .expression_attribute_names("#c", "c")
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .send()
                .await
            {
                Ok(_) => 200,
                Err(_) => 503,
            };
            Response::builder()
                .status(status)
                .body(Body::from("{}"))
                .map_err(Error::from)
        }
    }))
    .await
}
