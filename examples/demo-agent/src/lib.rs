//! The demo agent: the Basic Example of Vision Agents' HTTP server docs, in Rust.
//!
//! An [`Assistant`] with instructions and a `get_weather` tool greets the call on join,
//! welcomes each person who joins, and answers every message until it is closed. Its call
//! and its model live beside this file: [`edge::call_edge`] (the local call the runner
//! offers, or a scripted participant) and [`llm::model`] (a deterministic local model, or an
//! OpenAI-compatible one when `OPENAI_MODEL` is set).

pub mod edge;
pub mod llm;

use std::sync::Arc;

use switchboard::prelude::*;

/// The greeting the agent says when it joins.
pub const GREETING: &str = "Hello! How can I help you today?";
/// The agent's instructions.
pub const INSTRUCTIONS: &str = "You are a helpful voice assistant.";

/// The anchor's `create_agent`: an assistant with a `get_weather` tool. Its tools and its
/// model are made once per process (the warmup cache) and shared by every agent.
pub async fn create_agent(ctx: CreateContext) -> anyhow::Result<Assistant> {
    let tools = ctx
        .cache
        .get_or_try_init("demo-agent/tools", || async { Ok(tools()) });
    Assistant::builder(&ctx)
        .edge(edge::call_edge(&ctx))
        .instructions(INSTRUCTIONS)
        .greeting(GREETING)
        .llm(llm::model(&ctx).await?)
        .functions(tools.await?)
        .build()
}

/// The functions the model may call (the anchor's `llm.register_function`).
fn tools() -> FunctionRegistry {
    FunctionRegistry::new().with(
        ToolSpec::new("get_weather", "Get the current weather for a location")
            .string_param("location"),
        |args| async move {
            let location = args["location"].as_str().unwrap_or("an unknown place");
            Ok(format!("The weather in {location} is sunny and 72°F."))
        },
    )
}

/// The anchor's `join_call`: create the call, join it, greet, and converse until it ends.
pub async fn join_call(agent: Arc<Assistant>, ctx: JoinContext) -> anyhow::Result<()> {
    let call = agent.create_call(&ctx.call_type, &ctx.call_id).await?;
    let _in_call = agent.join(&call).await?;
    agent.simple_response(GREETING).await?;
    agent.finish().await
}
