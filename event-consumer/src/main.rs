//! One binary for the Lambda (when `AWS_LAMBDA_RUNTIME_API` is set) and the CLI.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    event_consumer::cli::main().await
}
