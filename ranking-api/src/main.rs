use clap::Parser;

#[tokio::main]
async fn main() -> Result<(), ranking_api::startup::BoxError> {
    ranking_api::startup::run(ranking_api::config::Cli::parse()).await
}
