//! The demo page and the sessions dashboard in headless Chromium (Debian's `chromium`, driven
//! over the DevTools protocol by `switchboard_testkit::browser`), against the real local
//! server and the demo agent: join a call, start the agent, chat, see its answer and its
//! live metrics, close the session; then the dashboard. Screenshots are kept under
//! `target/screenshots/` (and written to `docs/screenshots/` with
//! `SWITCHBOARD_DOCS_SCREENSHOTS=1`).

use std::path::PathBuf;

use switchboard_api::ServeOptions;
use switchboard_testkit::browser::Chromium;

use crate::local_call::Server;

fn screenshot_paths(name: &str) -> Vec<PathBuf> {
    let root = switchboard_testkit::bins::workspace_root();
    let mut paths = vec![root.join("target/screenshots").join(name)];
    if std::env::var_os("SWITCHBOARD_DOCS_SCREENSHOTS").is_some() {
        paths.push(root.join("docs/screenshots").join(name));
    }
    paths
}

async fn screenshot(browser: &mut Chromium, name: &str) {
    for path in screenshot_paths(name) {
        browser.screenshot(&path).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_joins_chats_with_the_agent_and_closes_its_session_then_the_dashboard_lists_it()
 {
    // Chromium starts within its wait only when no heavy test loads both cores.
    let _heavy = crate::HEAVY.lock().await;
    let server = Server::start(ServeOptions::default()).await;
    let base = format!("http://{}", server.addr);
    let mut page = Chromium::launch(&format!("{base}/?call_id=browser-call"), 1280, 800).await;
    assert_eq!(
        page.eval("document.title").await,
        "Switchboard · demo call",
        "the demo page is served at /"
    );
    assert_eq!(
        page.eval("document.getElementById('call-id').value").await,
        "browser-call",
        "the call id comes from the query"
    );

    // Join the call as Ada.
    page.type_into("#name", "Ada").await;
    page.click("#join").await;
    page.wait_for(
        "document.getElementById('connection').textContent === 'connected'",
        "the WebSocket join",
    )
    .await;
    page.wait_for(
        "document.getElementById('people').innerText.includes('Ada')",
        "Ada in the people list",
    )
    .await;

    // Start the agent: it joins and greets.
    page.click("#start").await;
    page.wait_for(
        "[...document.querySelectorAll('#messages li.agent')].some(li => li.innerText.includes('How can I help you today?'))",
        "the agent's greeting",
    )
    .await;
    assert!(page.text("#people").await.contains("Assistant"));
    page.wait_for(
        "document.getElementById('session-status').textContent === 'running'",
        "the session running",
    )
    .await;

    // Ask about the weather: the answer comes through the model's tool.
    page.type_into("#text", "What's the weather in Paris?")
        .await;
    page.click("#send").await;
    page.wait_for(
        "[...document.querySelectorAll('#messages li.agent')].some(li => li.innerText.includes('The weather in Paris is sunny and 72°F.'))",
        "the agent's answer",
    )
    .await;
    assert!(
        page.text("#messages")
            .await
            .contains("What's the weather in Paris?"),
        "Ada's own message is shown"
    );
    assert!(page.text("#round-trip").await.starts_with("Agent answered"));
    // The live metrics, as the agent flushed them.
    page.wait_for(
        "document.querySelector('[data-metric=llm_tool_calls__total]').textContent === '1'",
        "the tool call in the live metrics",
    )
    .await;
    let output_tokens = page
        .text("[data-metric=llm_output_tokens__total]")
        .await
        .parse::<u64>()
        .expect("output tokens are a number");
    assert!(output_tokens > 0);
    screenshot(&mut page, "demo-page.png").await;

    // Text from people never becomes markup.
    page.type_into("#text", "<img src=x onerror=alert(1)><b>bold?</b>")
        .await;
    page.click("#send").await;
    page.wait_for(
        "document.getElementById('messages').innerText.includes('<b>bold?</b>')",
        "the message shown as text",
    )
    .await;
    assert_eq!(
        page.eval("document.querySelectorAll('#messages img, #messages b').length")
            .await,
        0
    );

    // Close the session: the agent leaves and the session ends.
    page.click("#close").await;
    page.wait_for(
        "document.getElementById('session-status').textContent === 'ended'",
        "the session ended",
    )
    .await;
    page.wait_for(
        "!document.getElementById('people').innerText.includes('Assistant')",
        "the agent gone from the call",
    )
    .await;
    assert!(page.text("#messages").await.contains("Assistant left."));
    assert!(page.text("#error").await.is_empty(), "no error shown");

    // The dashboard: a live session in another call, and the ended one with ended included.
    server.start_agent("dashboard-call").await;
    page.navigate(&format!("{base}/sessions")).await;
    assert_eq!(page.eval("document.title").await, "Sessions · Switchboard");
    page.wait_for(
        "[...document.querySelectorAll('#rows tr')].some(tr => tr.innerText.includes('dashboard-call') && tr.innerText.includes('running'))",
        "the live session in the dashboard",
    )
    .await;
    assert!(
        !page.text("#rows").await.contains("browser-call"),
        "ended sessions are hidden by default"
    );
    page.click("#include-ended").await;
    page.wait_for(
        "[...document.querySelectorAll('#rows tr')].some(tr => tr.innerText.includes('browser-call') && tr.innerText.includes('ended') && tr.innerText.includes('requested'))",
        "the closed session, with its end reason",
    )
    .await;
    // The ended session's final metrics are in its row (1 tool call).
    let row = page
        .eval("[...document.querySelectorAll('#rows tr')].find(tr => tr.innerText.includes('browser-call')).innerText")
        .await;
    assert!(
        row.as_str()
            .unwrap()
            .split('\t')
            .any(|cell| cell.trim() == "1"),
        "{row}"
    );
    assert!(page.text("#summary").await.starts_with("1 live"));
    // serve keeps no warm pool: GET /pool is a 404 and the pool's line stays hidden.
    assert_eq!(
        page.eval("document.getElementById('pool').hidden").await,
        serde_json::Value::Bool(true)
    );
    screenshot(&mut page, "dashboard.png").await;
    drop(page);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_without_a_slash_renders_the_operations() {
    // Chromium starts within its wait only when no heavy test loads both cores.
    let _heavy = crate::HEAVY.lock().await;
    let server = Server::start(ServeOptions::default()).await;
    let mut page = Chromium::launch(&format!("http://{}/docs", server.addr), 1280, 800).await;
    page.wait_for(
        "document.querySelectorAll('.opblock').length >= 7",
        "Swagger UI rendering the API's operations",
    )
    .await;
    drop(page);
    server.stop().await;
}
