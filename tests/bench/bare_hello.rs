//! The benchmarks' baseline: a bare `lambda_http` function that answers every event with a
//! small JSON body. It is built by the same `cargo build --release` as the real functions, with
//! the same profile, runtime flavour and `lambda_http` features, so every difference the
//! benchmarks show is the cost of the functions' own code.

use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_req: Request| async {
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"message":"hello"}"#))
            .map_err(Error::from)
    }))
    .await
}
