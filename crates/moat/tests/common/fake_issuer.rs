//! A fake OAuth issuer on loopback for tests: metadata discovery, an
//! authorization endpoint that redirects a (scripted) browser to the
//! client's loopback callback, a token endpoint that checks PKCE, rotates
//! refresh tokens and serves the device flow, and a page that approves a
//! device code. Every token it issues is recorded, so tests can search for
//! them where they must not be.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

/// The client id the fake accepts.
pub const CLIENT_ID: &str = "moat-test-client";

#[derive(Default)]
struct State {
    base: String,
    expires_in: u64,
    counter: u64,
    /// Authorization codes waiting for their exchange: challenge, redirect.
    codes: HashMap<String, (String, String)>,
    /// Device codes: user code and whether it was approved.
    devices: HashMap<String, (String, bool)>,
    /// The refresh token that works now (rotated on every use).
    live_refresh: Option<String>,
    access_tokens: Vec<String>,
    refresh_tokens: Vec<String>,
    refreshes: usize,
    /// Answer the token endpoint with 503 while set.
    failing: bool,
}

pub struct FakeIssuer {
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeIssuer {
    /// Starts on a free loopback port; tokens live `expires_in` seconds.
    pub fn start(expires_in: u64) -> FakeIssuer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let state = Arc::new(Mutex::new(State {
            base: url.clone(),
            expires_in,
            ..State::default()
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(serve(listener, shared));
        });
        FakeIssuer { port, url, state }
    }

    pub fn access_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().access_tokens.clone()
    }

    pub fn refresh_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().refresh_tokens.clone()
    }

    /// Every token issued so far.
    pub fn all_tokens(&self) -> Vec<String> {
        let mut all = self.access_tokens();
        all.extend(self.refresh_tokens());
        all
    }

    pub fn refreshes(&self) -> usize {
        self.state.lock().unwrap().refreshes
    }

    pub fn set_failing(&self, failing: bool) {
        self.state.lock().unwrap().failing = failing;
    }
}

async fn serve(listener: std::net::TcpListener, state: Arc<Mutex<State>>) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, &state).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn pairs(text: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(text.as_bytes()).into_owned().collect()
}

fn answer(status: u16, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn refuse(error: &str) -> Response<Full<Bytes>> {
    answer(400, serde_json::json!({ "error": error }))
}

async fn handle(req: Request<Incoming>, state: &Arc<Mutex<State>>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query = pairs(req.uri().query().unwrap_or_default());
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let form = pairs(&String::from_utf8_lossy(&body));
    let mut state = state.lock().unwrap();
    match (method.as_str(), path.as_str()) {
        ("GET", "/.well-known/oauth-authorization-server") => answer(
            200,
            serde_json::json!({
                "issuer": state.base,
                "authorization_endpoint": format!("{}/authorize", state.base),
                "token_endpoint": format!("{}/token", state.base),
                "device_authorization_endpoint": format!("{}/device", state.base),
            }),
        ),
        ("GET", "/authorize") => authorize(&mut state, &query),
        ("POST", "/token") if state.failing => answer(503, serde_json::json!({})),
        ("POST", "/token") => token(&mut state, &form),
        ("POST", "/device") if form.get("client_id").map(String::as_str) == Some(CLIENT_ID) => {
            state.counter += 1;
            let device_code = format!("device-{}", state.counter);
            let user_code = format!("USER-{}", state.counter);
            state.devices.insert(device_code.clone(), (user_code.clone(), false));
            answer(
                200,
                serde_json::json!({
                    "device_code": device_code,
                    "user_code": user_code,
                    "verification_uri": format!("{}/device/verify", state.base),
                    "verification_uri_complete": format!("{}/device/verify?user_code={user_code}", state.base),
                    "expires_in": 60,
                    "interval": 1,
                }),
            )
        }
        ("GET", "/device/verify") => {
            let user_code = query.get("user_code").cloned().unwrap_or_default();
            let approved = state
                .devices
                .values_mut()
                .find(|(code, _)| *code == user_code)
                .map(|entry| entry.1 = true)
                .is_some();
            answer(
                if approved { 200 } else { 404 },
                serde_json::json!({ "approved": approved }),
            )
        }
        _ => answer(404, serde_json::json!({ "error": "not_found" })),
    }
}

/// Checks the request like a real issuer and redirects to the callback.
fn authorize(state: &mut State, query: &HashMap<String, String>) -> Response<Full<Bytes>> {
    let field = |name: &str| query.get(name).cloned().unwrap_or_default();
    let redirect = field("redirect_uri");
    let well_formed = field("response_type") == "code"
        && field("client_id") == CLIENT_ID
        && field("code_challenge_method") == "S256"
        && !field("code_challenge").is_empty()
        && !field("state").is_empty()
        && redirect.starts_with("http://127.0.0.1:");
    if !well_formed {
        return refuse("invalid_request");
    }
    state.counter += 1;
    let code = format!("code-{}", state.counter);
    state
        .codes
        .insert(code.clone(), (field("code_challenge"), redirect.clone()));
    let location = format!(
        "{redirect}?{}",
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("code", &code)
            .append_pair("state", &field("state"))
            .finish()
    );
    Response::builder()
        .status(302)
        .header("location", location)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn token(state: &mut State, form: &HashMap<String, String>) -> Response<Full<Bytes>> {
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    if field("client_id") != CLIENT_ID {
        return refuse("invalid_client");
    }
    match field("grant_type").as_str() {
        "authorization_code" => {
            let Some((challenge, redirect)) = state.codes.remove(&field("code")) else {
                return refuse("invalid_grant");
            };
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(field("code_verifier").as_bytes()));
            if computed != challenge || redirect != field("redirect_uri") {
                return refuse("invalid_grant");
            }
            issue(state)
        }
        "refresh_token" => {
            if state.live_refresh.as_deref() != Some(field("refresh_token").as_str()) {
                return refuse("invalid_grant");
            }
            state.refreshes += 1;
            issue(state)
        }
        "urn:ietf:params:oauth:grant-type:device_code" => match state.devices.get(&field("device_code")) {
            Some((_, true)) => {
                state.devices.remove(&field("device_code"));
                issue(state)
            }
            Some((_, false)) => refuse("authorization_pending"),
            None => refuse("invalid_grant"),
        },
        _ => refuse("unsupported_grant_type"),
    }
}

fn issue(state: &mut State) -> Response<Full<Bytes>> {
    state.counter += 1;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let access = format!("fake-oauth-access-{}-{nonce:08x}", state.counter);
    let refresh = format!("fake-oauth-refresh-{}-{nonce:08x}", state.counter);
    state.access_tokens.push(access.clone());
    state.refresh_tokens.push(refresh.clone());
    state.live_refresh = Some(refresh.clone());
    answer(
        200,
        serde_json::json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": state.expires_in,
            "refresh_token": refresh,
            "scope": "api.read",
        }),
    )
}
