//! Rotating keys (`AUTH_JWT_JWKS_URL`) against a local JWKS server: keys chosen by `kid`, the
//! cache honoured, a rotation picked up by one refetch, unknown `kid`s refetching at most
//! once per minute, a `kid` naming a key of another algorithm refused, and start-up failing
//! closed when the URL cannot be read.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::IntoResponse;
use http::StatusCode;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard_api::auth::{AuthConfigError, JwtPolicy, Scope};

const RS_PRIVATE: &[u8] = include_bytes!("keys/rs256-private.pem");
const RS_PRIVATE_2: &[u8] = include_bytes!("keys/rs256-private-2.pem");
const ES_PRIVATE: &[u8] = include_bytes!("keys/es256-private.pem");
const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "switchboard";

/// What the server serves, and how often it was asked.
#[derive(Default)]
struct Served {
    keys: Mutex<Vec<Value>>,
    cache_control: Mutex<Option<String>>,
    fetches: AtomicUsize,
}

async fn jwks(State(served): State<Arc<Served>>) -> axum::response::Response {
    served.fetches.fetch_add(1, Ordering::SeqCst);
    let body = json!({"keys": served.keys.lock().unwrap().clone()});
    let mut response = axum::Json(body).into_response();
    if let Some(cc) = served.cache_control.lock().unwrap().clone() {
        response
            .headers_mut()
            .insert(http::header::CACHE_CONTROL, cc.parse().unwrap());
    }
    response
}

async fn server() -> (String, Arc<Served>) {
    let served = Arc::new(Served::default());
    let app = axum::Router::new()
        .route("/.well-known/jwks.json", axum::routing::get(jwks))
        .with_state(served.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/.well-known/jwks.json"), served)
}

fn jwk(private: &[u8], algorithm: Algorithm, kid: &str) -> Value {
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(private).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(private).unwrap(),
        other => panic!("{other:?}"),
    };
    let mut jwk = Jwk::from_encoding_key(&key, algorithm).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    let value = serde_json::to_value(&jwk).unwrap();
    assert!(value.get("d").is_none(), "a public key only: {value}");
    value
}

fn token(private: &[u8], algorithm: Algorithm, kid: Option<&str>) -> String {
    let key = match algorithm {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(private).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(private).unwrap(),
        other => panic!("{other:?}"),
    };
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    let claims = json!({
        "sub": "tester",
        "exp": jsonwebtoken::get_current_timestamp() + 600,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "scope": "sessions:view",
    });
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn vars(url: &str, extra: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let mut pairs: Vec<(String, String)> = vec![
        ("AUTH_MODE".into(), "jwt".into()),
        ("AUTH_JWT_JWKS_URL".into(), url.into()),
        ("AUTH_JWT_ISSUER".into(), ISSUER.into()),
        ("AUTH_JWT_AUDIENCE".into(), AUDIENCE.into()),
    ];
    for (k, v) in extra {
        pairs.retain(|(name, _)| name != k);
        if !v.is_empty() {
            pairs.push(((*k).into(), (*v).into()));
        }
    }
    move |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

async fn status(policy: &JwtPolicy, token: &str) -> Result<(), (StatusCode, String)> {
    policy.verify(token).await.map(drop).map_err(|r| {
        let detail = format!("{r:?}");
        (r.status, detail)
    })
}

#[tokio::test]
async fn keys_rotate_by_kid_within_the_cache_and_the_refetch_bounds() {
    let (url, served) = server().await;
    *served.keys.lock().unwrap() = vec![jwk(RS_PRIVATE, Algorithm::RS256, "k1")];
    *served.cache_control.lock().unwrap() = Some("public, max-age=3600".into());
    let policy = JwtPolicy::load(vars(&url, &[]))
        .await
        .expect("the key set")
        .expect("a policy");
    assert_eq!(
        served.fetches.load(Ordering::SeqCst),
        1,
        "read once at start"
    );

    let k1 = token(RS_PRIVATE, Algorithm::RS256, Some("k1"));
    status(&policy, &k1).await.expect("k1 verifies");
    status(&policy, &k1).await.expect("k1 verifies");
    assert_eq!(served.fetches.load(Ordering::SeqCst), 1, "cached (max-age)");

    // The provider rotates: k2 replaces k1, and an EC key appears.
    *served.keys.lock().unwrap() = vec![
        jwk(RS_PRIVATE_2, Algorithm::RS256, "k2"),
        jwk(ES_PRIVATE, Algorithm::ES256, "ec1"),
    ];
    status(&policy, &k1)
        .await
        .expect("still cached: k1 verifies until the set expires");
    let k2 = token(RS_PRIVATE_2, Algorithm::RS256, Some("k2"));
    status(&policy, &k2)
        .await
        .expect("an unknown kid refetches once: k2 verifies");
    assert_eq!(served.fetches.load(Ordering::SeqCst), 2);

    // Gone from the set, and no second refetch within the minute: k1, or any made-up kid.
    for kid in ["k1", "made-up", "another"] {
        let err = status(&policy, &token(RS_PRIVATE, Algorithm::RS256, Some(kid)))
            .await
            .unwrap_err();
        assert_eq!(err.0, StatusCode::UNAUTHORIZED, "{kid}: {err:?}");
        assert!(err.1.contains("unknown key"), "{kid}: {err:?}");
    }
    assert_eq!(
        served.fetches.load(Ordering::SeqCst),
        2,
        "unknown kids refetch at most once per 60 s"
    );

    // A kid naming the EC key: refused without trying it (RS256 is pinned), no refetch.
    let wrong = token(RS_PRIVATE_2, Algorithm::RS256, Some("ec1"));
    let err = status(&policy, &wrong).await.unwrap_err();
    assert_eq!(err.0, StatusCode::UNAUTHORIZED);
    assert!(err.1.contains("bad signature or algorithm"), "{err:?}");
    // An ES256 token for the EC key: the pinned algorithm refuses it too.
    let es = token(ES_PRIVATE, Algorithm::ES256, Some("ec1"));
    assert_eq!(
        status(&policy, &es).await.unwrap_err().0,
        StatusCode::UNAUTHORIZED
    );
    // A token without a kid cannot choose a key.
    let bare = token(RS_PRIVATE_2, Algorithm::RS256, None);
    let err = status(&policy, &bare).await.unwrap_err();
    assert!(err.1.contains("no kid"), "{err:?}");
    assert_eq!(served.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn start_up_fails_closed_and_needs_https_issuer_and_audience() {
    let (url, served) = server().await;
    *served.keys.lock().unwrap() = vec![jwk(RS_PRIVATE, Algorithm::RS256, "k1")];
    // Issuer and audience are required with a key set, unless explicitly allowed.
    for missing in ["AUTH_JWT_ISSUER", "AUTH_JWT_AUDIENCE"] {
        let err = JwtPolicy::load(vars(&url, &[(missing, "")]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, AuthConfigError::Unbound { name, .. } if name == missing),
            "{err}"
        );
    }
    let unbound = vars(
        &url,
        &[
            ("AUTH_JWT_ISSUER", ""),
            ("AUTH_JWT_AUDIENCE", ""),
            ("AUTH_JWT_ALLOW_UNBOUND_TOKENS", "true"),
        ],
    );
    assert!(JwtPolicy::load(unbound).await.unwrap().is_some());
    // HTTPS only, loopback excepted.
    let err = JwtPolicy::load(vars("http://idp.example/jwks.json", &[]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must be https://"), "{err}");
    // A key set and a key, or HS256: refused.
    assert!(matches!(
        JwtPolicy::load(vars(
            &url,
            &[("AUTH_JWT_KEY", "a key as well, thirty-two bytes or so")]
        ))
        .await
        .unwrap_err(),
        AuthConfigError::KeyAndJwks
    ));
    assert!(
        JwtPolicy::load(vars(&url, &[("AUTH_JWT_ALGORITHM", "HS256")]))
            .await
            .is_err()
    );
    // No usable key: refused.
    *served.keys.lock().unwrap() = vec![jwk(ES_PRIVATE, Algorithm::ES256, "ec1")];
    let err = JwtPolicy::load(vars(&url, &[])).await.unwrap_err();
    assert!(err.to_string().contains("no RS256 signing key"), "{err}");

    // Nothing listening: refused at once.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let err = JwtPolicy::load(vars(&format!("http://{closed}/jwks.json"), &[]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("could not be read"), "{err}");
    // A server that never answers: refused within the 2 s bound, not hung.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let started = Instant::now();
    let err = JwtPolicy::load(vars(&format!("http://{silent_addr}/jwks.json"), &[]))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded, not hung: {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains(&silent_addr.to_string()), "{err}");
    held.abort();
}

fn signed(claims: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".into());
    let mut claims = claims;
    claims["exp"] = json!(jsonwebtoken::get_current_timestamp() + 600);
    claims["iss"] = json!(ISSUER);
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(RS_PRIVATE).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn tokens_shaped_like_cognito_okta_and_entra_ones_are_understood() {
    let (url, served) = server().await;
    *served.keys.lock().unwrap() = vec![jwk(RS_PRIVATE, Algorithm::RS256, "k1")];
    // Cognito access tokens: no aud, the app client in client_id, a resource server's scopes
    // as `<identifier>/<scope>`.
    let cognito = JwtPolicy::load(vars(&url, &[("AUTH_JWT_SCOPE_PREFIX", "switchboard/")]))
        .await
        .unwrap()
        .unwrap();
    let access = signed(json!({
        "sub": "user-1", "client_id": AUDIENCE, "token_use": "access",
        "scope": "openid switchboard/sessions:view switchboard/metrics:view",
    }));
    let grant = cognito
        .verify(&access)
        .await
        .expect("a Cognito access token");
    assert!(grant.has(Scope::SessionsView) && grant.has(Scope::MetricsView));
    assert!(!grant.has(Scope::SessionsStart));
    let other_client = signed(json!({
        "sub": "user-1", "client_id": "another-app", "scope": "switchboard/sessions:view",
    }));
    let err = cognito.verify(&other_client).await.unwrap_err();
    assert_eq!(
        err.status,
        StatusCode::UNAUTHORIZED,
        "another app client: {err:?}"
    );
    let unprefixed = signed(json!({
        "sub": "user-1", "client_id": AUDIENCE, "scope": "sessions:view",
    }));
    assert!(
        !cognito
            .verify(&unprefixed)
            .await
            .unwrap()
            .has(Scope::SessionsView),
        "with a prefix, only prefixed scopes count"
    );
    // Okta: scp as an array; Entra: scp as a string, application roles in roles.
    let plain = JwtPolicy::load(vars(&url, &[])).await.unwrap().unwrap();
    let okta = signed(json!({"sub": "u", "aud": AUDIENCE, "scp": ["sessions:view"]}));
    assert!(plain.verify(&okta).await.unwrap().has(Scope::SessionsView));
    let entra_user = signed(json!({"sub": "u", "aud": [AUDIENCE], "scp": "sessions:start"}));
    assert!(
        plain
            .verify(&entra_user)
            .await
            .unwrap()
            .has(Scope::SessionsStart)
    );
    let entra_app = signed(json!({"sub": "app", "aud": AUDIENCE, "roles": ["sessions:close"]}));
    assert!(
        plain
            .verify(&entra_app)
            .await
            .unwrap()
            .has(Scope::SessionsClose)
    );
    // An aud that is not ours is refused, even with a matching client_id.
    let wrong = signed(json!({
        "sub": "u", "aud": "someone-else", "client_id": AUDIENCE, "scp": ["sessions:view"],
    }));
    let err = plain.verify(&wrong).await.unwrap_err();
    assert!(format!("{err:?}").contains("wrong audience"), "{err:?}");
}
