//! `AUTH_MODE=jwt` through the `api` handler: API Gateway HTTP API v2 events as the template
//! sends them (no authorizer: the function checks every token), against moto. The security
//! matrix of the local router (api/tests/api/auth.rs) on the deployed path: every endpoint ×
//! {no token, garbage, bad signature, expired, wrong scope, wrong call}, and the beacon's
//! `?token=`, with no state change on a refusal.

use serde_json::{Value, json};
use switchboard_functions::{ApiConfig, api_router};

use crate::events::{Event, get, invoke};
use crate::handler::deployment_vars;

const SECRET: &str = "a deployment's hs256 secret, thirty-two bytes or more";
const ALL: &str = "sessions:start sessions:close sessions:view metrics:view";

fn token(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn scoped(scope: &str, calls: Option<&[&str]>) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let mut claims = json!({"sub": "svc", "exp": exp, "scope": scope});
    if let Some(calls) = calls {
        claims["calls"] = json!(calls);
    }
    token(SECRET, claims)
}

fn bearer(event: Event, token: Option<&str>) -> Event {
    let event = event.unauthenticated();
    match token {
        Some(t) => event.header("authorization", format!("Bearer {t}")),
        None => event,
    }
}

#[tokio::test]
async fn the_deployed_handler_checks_every_token_itself() {
    let sdk = switchboard_testkit::sdk_config().await;
    let (mut vars, _, _) = deployment_vars().await;
    vars.insert("AUTH_MODE", "jwt".into());
    vars.insert("AUTH_JWT_KEY", SECRET.into());
    let config = ApiConfig::from_lookup(|name| vars.get(name).cloned()).expect("config");
    assert!(
        !format!("{config:?}").contains(SECRET),
        "the configuration never shows the secret"
    );
    let router = api_router(&config, &sdk).expect("router");

    let admin = scoped(ALL, None);
    let created = invoke(
        &router,
        &bearer(
            get("/calls/jwt-call/sessions")
                .method("POST")
                .json(json!({})),
            Some(&admin),
        ),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.json()["session_id"].as_str().unwrap().to_owned();
    let path = format!("/calls/jwt-call/sessions/{id}");
    let state = |router| {
        let (path, admin) = (path.clone(), admin.clone());
        async move {
            let got = invoke(router, &bearer(get(&path), Some(&admin))).await;
            assert_eq!(got.status, 200, "{got:?}");
            let listed = invoke(
                router,
                &bearer(get("/calls/jwt-call/sessions"), Some(&admin)),
            )
            .await;
            (
                got.json()["status"].clone(),
                got.json()["close_requested_at"].clone(),
                listed.json()["sessions"].as_array().unwrap().len(),
            )
        }
    };
    let before = state(&router).await;
    assert_eq!(before, (json!("starting"), Value::Null, 1));

    let mut tampered = admin.clone();
    tampered.truncate(tampered.len() - 2);
    tampered.push_str("xx");
    let expired = token(
        SECRET,
        json!({"sub": "svc", "exp": jsonwebtoken::get_current_timestamp() - 3600, "scope": ALL}),
    );
    let endpoints: [(&str, Event, &str); 7] = [
        (
            "start",
            get("/calls/jwt-call/sessions")
                .method("POST")
                .json(json!({})),
            "sessions:start",
        ),
        ("get", get(&path), "sessions:view"),
        (
            "list call",
            get("/calls/jwt-call/sessions"),
            "sessions:view",
        ),
        ("metrics", get(format!("{path}/metrics")), "metrics:view"),
        ("close", get(&path).method("DELETE"), "sessions:close"),
        (
            "beacon",
            get(format!("{path}/close")).method("POST"),
            "sessions:close",
        ),
        ("list all", get("/sessions"), "sessions:view"),
    ];
    let mut results = Vec::new();
    for (name, event, scope) in &endpoints {
        let others: Vec<&str> = ALL.split(' ').filter(|s| s != scope).collect();
        let cases: [(&str, Option<String>, u16); 6] = [
            ("no token", None, 401),
            ("garbage", Some("garbage".into()), 401),
            ("bad signature", Some(tampered.clone()), 401),
            ("expired", Some(expired.clone()), 401),
            ("wrong scope", Some(scoped(&others.join(" "), None)), 403),
            (
                "wrong call",
                Some(scoped(ALL, Some(&["another-call"]))),
                if *name == "list all" { 200 } else { 403 },
            ),
        ];
        for (case, token, want) in cases {
            let reply = invoke(&router, &bearer(event.clone(), token.as_deref())).await;
            assert_eq!(reply.status, want, "{name} with {case}: {reply:?}");
            if want == 401 {
                assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
            }
            if let Some(token) = &token {
                assert!(
                    !reply.body.contains(token.as_str()),
                    "{name}: the token is echoed"
                );
            }
            if *name == "list all" && want == 200 {
                assert_eq!(
                    reply.json()["sessions"],
                    json!([]),
                    "another call's token sees nothing"
                );
            }
            results.push((*name, case, reply.status));
        }
        assert_eq!(state(&router).await, before, "after {name}");
    }
    assert_eq!(results.len(), 42);

    // The beacon's query token, through the event's rawQueryString: same checks, then 202.
    let viewer = scoped("sessions:view", None);
    let beacon = get(format!("{path}/close")).method("POST");
    let refused = invoke(
        &router,
        &bearer(beacon.clone().query(&format!("token={viewer}")), None),
    )
    .await;
    assert_eq!(refused.status, 403, "{refused:?}");
    let not_here = invoke(
        &router,
        &bearer(
            get(&path).method("DELETE").query(&format!("token={admin}")),
            None,
        ),
    )
    .await;
    assert_eq!(not_here.status, 401, "only the beacon reads ?token=");
    assert_eq!(state(&router).await, before);
    let closer = scoped("sessions:close", Some(&["jwt-call"]));
    let closed = invoke(
        &router,
        &bearer(beacon.query(&format!("token={closer}")), None),
    )
    .await;
    assert_eq!(closed.status, 202, "{closed:?}");
    let after = state(&router).await;
    assert_eq!(after.0, json!("closing"));
}

/// The template's way: the key in Secrets Manager (here moto's), read once at init. Until it
/// is read the router refuses to be built (fail closed), and a missing secret fails the init.
#[tokio::test]
async fn the_key_comes_from_secrets_manager_at_init_and_the_router_fails_closed_without_it() {
    const ES_PUBLIC: &str = include_str!("../../../api/tests/api/keys/es256-public.pem");
    const ES_PRIVATE: &[u8] = include_bytes!("../../../api/tests/api/keys/es256-private.pem");
    let sdk = switchboard_testkit::sdk_config().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let name = format!("switchboard-jwt-{}", uuid::Uuid::now_v7().simple());
    let arn = secrets
        .create_secret()
        .name(&name)
        .secret_string(ES_PUBLIC)
        .send()
        .await
        .expect("create secret")
        .arn
        .expect("arn");
    let (mut vars, _, _) = deployment_vars().await;
    vars.insert("AUTH_MODE", "jwt".into());
    vars.insert("AUTH_JWT_ALGORITHM", "ES256".into());
    vars.insert("AUTH_JWT_KEY_SECRET_ID", arn.clone());
    // F13: an identity provider's key needs the issuer and the audience (or an explicit opt-out).
    for missing in ["AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE"] {
        vars.insert("AUTH_JWT_ISSUER", "https://issuer.example".into());
        vars.insert("AUTH_JWT_AUDIENCE", "switchboard".into());
        vars.remove(missing);
        let refused = ApiConfig::from_lookup(|name| vars.get(name).cloned()).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains(&format!("{missing} is required with an RS256/ES256 key")),
            "{refused}"
        );
    }
    vars.insert("AUTH_JWT_ALLOW_UNBOUND_TOKENS", "true".into());
    assert!(ApiConfig::from_lookup(|name| vars.get(name).cloned()).is_ok());
    vars.remove("AUTH_JWT_ISSUER");
    vars.remove("AUTH_JWT_AUDIENCE");
    vars.insert("AUTH_JWT_ALLOW_UNBOUND_TOKENS", "true".into());

    let mut config = ApiConfig::from_lookup(|name| vars.get(name).cloned()).expect("config");
    assert!(config.auth.is_none() && config.auth_pending.is_some());
    let refused = api_router(&config, &sdk).expect_err("no router before the key is read");
    assert!(refused.to_string().contains("was not loaded"), "{refused}");
    config.load_auth(&sdk).await.expect("the key");
    let router = api_router(&config, &sdk).expect("router");

    let exp = jsonwebtoken::get_current_timestamp() + 600;
    let es = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &json!({"sub": "svc", "exp": exp, "scope": "sessions:start"}),
        &jsonwebtoken::EncodingKey::from_ec_pem(ES_PRIVATE).unwrap(),
    )
    .unwrap();
    let start = get("/calls/secret-call/sessions")
        .method("POST")
        .json(json!({}));
    let created = invoke(&router, &bearer(start.clone(), Some(&es))).await;
    assert_eq!(created.status, 201, "{created:?}");
    let hs = invoke(
        &router,
        &bearer(start, Some(&scoped("sessions:start", None))),
    )
    .await;
    assert_eq!(hs.status, 401, "an HS256 token against an ES256 key");

    // A secret that does not exist fails the init; the id without AUTH_MODE=jwt is refused.
    vars.insert("AUTH_JWT_KEY_SECRET_ID", format!("{arn}-missing"));
    let mut missing = ApiConfig::from_lookup(|name| vars.get(name).cloned()).expect("config");
    let error = missing.load_auth(&sdk).await.expect_err("no such secret");
    assert!(format!("{error:#}").contains("GetSecretValue"), "{error:#}");
    assert!(
        api_router(&missing, &sdk).is_err(),
        "still closed after a failed read"
    );
    vars.insert(
        "AUTH_JWT_KEY",
        "a second source of the key, 32 bytes+".into(),
    );
    assert!(
        ApiConfig::from_lookup(|name| vars.get(name).cloned()).is_err(),
        "one source of the key only"
    );
    vars.remove("AUTH_JWT_KEY");
    vars.insert("AUTH_MODE", "none".into());
    assert!(ApiConfig::from_lookup(|name| vars.get(name).cloned()).is_err());
}

/// The deployed path with an identity provider's key set (`JwtJwksUrl`): read once at init
/// (no router before), a token chosen by `kid` accepted, and an unreadable URL failing the
/// init closed.
#[tokio::test]
async fn a_key_set_is_read_at_init_and_the_router_fails_closed_without_it() {
    const RS_PRIVATE: &[u8] = include_bytes!("../../../api/tests/api/keys/rs256-private.pem");
    let encoding = jsonwebtoken::EncodingKey::from_rsa_pem(RS_PRIVATE).unwrap();
    let mut jwk =
        jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, jsonwebtoken::Algorithm::RS256)
            .unwrap();
    jwk.common.key_id = Some("idp-key-1".into());
    let set = json!({ "keys": [jwk] });
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let set = set.clone();
            async move { axum::Json(set) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let sdk = switchboard_testkit::sdk_config().await;
    let (mut vars, _, _) = deployment_vars().await;
    vars.insert("AUTH_MODE", "jwt".into());
    vars.insert("AUTH_JWT_ALGORITHM", "RS256".into());
    vars.insert("AUTH_JWT_JWKS_URL", url.clone());
    vars.insert("AUTH_JWT_ISSUER", "https://idp.example".into());
    vars.insert("AUTH_JWT_AUDIENCE", "switchboard".into());
    let mut config = ApiConfig::from_lookup(|name| vars.get(name).cloned()).expect("config");
    let refused = api_router(&config, &sdk).expect_err("no router before the keys are read");
    assert!(refused.to_string().contains(&url), "{refused}");
    config.load_auth(&sdk).await.expect("the key set");
    let router = api_router(&config, &sdk).expect("router");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("idp-key-1".into());
    let signed = jsonwebtoken::encode(
        &header,
        &json!({
            "sub": "svc", "exp": jsonwebtoken::get_current_timestamp() + 600,
            "iss": "https://idp.example", "aud": "switchboard", "scope": "sessions:start",
        }),
        &encoding,
    )
    .unwrap();
    let start = get("/calls/jwks-call/sessions")
        .method("POST")
        .json(json!({}));
    let created = invoke(&router, &bearer(start.clone(), Some(&signed))).await;
    assert_eq!(created.status, 201, "{created:?}");
    let hs = invoke(
        &router,
        &bearer(start, Some(&scoped("sessions:start", None))),
    )
    .await;
    assert_eq!(hs.status, 401, "an HS256 token against the key set");

    // A key set and a secret: refused; an unreadable URL fails the init, closed.
    vars.insert(
        "AUTH_JWT_KEY_SECRET_ID",
        "arn:aws:secretsmanager:us-east-1:1:secret:x".into(),
    );
    assert!(ApiConfig::from_lookup(|name| vars.get(name).cloned()).is_err());
    vars.remove("AUTH_JWT_KEY_SECRET_ID");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    vars.insert("AUTH_JWT_JWKS_URL", format!("http://{closed}/jwks.json"));
    let mut unreadable = ApiConfig::from_lookup(|name| vars.get(name).cloned()).expect("config");
    let err = unreadable.load_auth(&sdk).await.expect_err("no key set");
    assert!(format!("{err:#}").contains("could not be read"), "{err:#}");
    assert!(api_router(&unreadable, &sdk).is_err(), "still closed");
}
