//! The rotation function of the JWT and CSRF keys: Secrets Manager invokes it for each of a
//! rotation's four steps (`flowbotz_security::secrets::rotation`).

use flowbotz_security::Event;
use flowbotz_security::secrets::aws;
use flowbotz_security::secrets::rotation::{RotationEvent, rotate};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let config = flowbotz_security::start(env!("CARGO_CRATE_NAME"), &[])?;
    let client = aws::client(std::time::Duration::from_secs(5)).await;
    let environment = config.environment;
    lambda_runtime::run(service_fn(|event: LambdaEvent<RotationEvent>| {
        let client = client.clone();
        async move {
            rotate(&client, &event.payload, environment)
                .await
                .inspect_err(|err| {
                    tracing::error!(event = Event::SecretsRotationFailed.as_str(), error = %err, "rotation step failed");
                })?;
            Ok::<_, Error>(serde_json::Value::Null)
        }
    }))
    .await
}
