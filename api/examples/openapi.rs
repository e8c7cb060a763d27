//! Prints the OpenAPI document (used by the test script's OpenAPI 3.1 validation).

fn main() -> anyhow::Result<()> {
    let json = switchboard_api::openapi::document().to_pretty_json()?;
    std::io::Write::write_all(&mut std::io::stdout(), json.as_bytes())?;
    Ok(())
}
