//! `moat grant aws`: a run's AWS config names a `credential_process` that
//! gets short-lived keys from the moat proxy; the daemon assumes the role
//! at a local fake STS, which checks the SigV4 signature made with the
//! host's keys and issues distinctive temporary keys. The host's secret key
//! is nowhere the container can look (files, environment, `docker
//! inspect`, output) nor in the run's trace or audit log; a request
//! without the run's token gets nothing; revoke stops the issuing. The AWS
//! CLI (Debian's `awscli`) in a run signs with the issued keys.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use moat_creds::sigv4::{self, RequestToSign, Scope};

use super::support::{Home, docker, docker_exists, text};
use super::upstream::{docker_bridge_address, tls_acceptor};

const STS_HOST: &str = "sts.moat-test.example";
const ROLE: &str = "arn:aws:iam::123456789012:role/moat-e2e";
const REGION: &str = "eu-west-1";
/// The host's keys (fake); the secret is what must never reach a run.
const HOST_KEY_ID: &str = "MOATHOSTKEYIDE2E0001";
const HOST_SECRET: &str = "moat-host-aws-secret-6b0e4f1c9d2a7e35";
/// Another profile's keys, which `--aws-profile` must not pick.
const DECOY_KEY_ID: &str = "MOATDECOYKEYID000001";
/// What the fake STS's temporary keys start with.
const TEMP_KEY_PREFIX: &str = "ASIAMOATFAKESTS";

/// What the fake STS saw: AssumeRole calls with a valid signature by the
/// host's key, GetCallerIdentity calls signed by keys it issued, and
/// anything else (with why).
#[derive(Default)]
struct Calls {
    valid: usize,
    /// Issued access key id → its secret and session token.
    issued: std::collections::HashMap<String, (String, String)>,
    /// The issued key ids that asked GetCallerIdentity.
    identities: Vec<String>,
    invalid: Vec<String>,
}

/// A fake STS over HTTPS (its own CA) that checks each request's SigV4
/// signature against the host's secret and issues numbered keys.
struct FakeSts {
    port: u16,
    ca_file: std::path::PathBuf,
    calls: Arc<Mutex<Calls>>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeSts {
    fn start(dir: &std::path::Path) -> FakeSts {
        let (acceptor, ca_file) = tls_acceptor(&[STS_HOST], dir);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("0.0.0.0:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = Arc::new(Mutex::new(Calls::default()));
        let serving = calls.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)): std::io::Result<(_, SocketAddr)> = listener.accept().await else {
                    continue;
                };
                let (acceptor, calls) = (acceptor.clone(), serving.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let service = service_fn(move |req| answer(req, calls.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FakeSts {
            port,
            ca_file,
            calls,
            _runtime: runtime,
        }
    }

    fn identity_calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().identities.clone()
    }

    fn valid_calls(&self) -> usize {
        let calls = self.calls.lock().unwrap();
        assert!(
            calls.invalid.is_empty(),
            "the fake STS saw bad requests: {:?}",
            calls.invalid
        );
        calls.valid
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    calls: Arc<Mutex<Calls>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut calls = calls.lock().unwrap();
    let form = String::from_utf8_lossy(&body).into_owned();
    if form.contains("Action=GetCallerIdentity") {
        return Ok(caller_identity(&parts, &body, &mut calls));
    }
    match check_signature(&parts, &body, &|key_id| {
        (key_id == HOST_KEY_ID).then(|| HOST_SECRET.to_string())
    })
    .and_then(|_| check_assume_role(&form))
    {
        Ok(()) => {
            calls.valid += 1;
            let n = calls.valid;
            let (key_id, secret, token) = (
                format!("{TEMP_KEY_PREFIX}{n:05}"),
                format!("fake-sts-temporary-secret-{n}"),
                format!("fake-sts-session-token-{n}+/="),
            );
            calls.issued.insert(key_id.clone(), (secret.clone(), token.clone()));
            let expiration = (chrono::Utc::now() + chrono::TimeDelta::minutes(15)).format("%Y-%m-%dT%H:%M:%SZ");
            let xml = format!(
                "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult>\
                 <Credentials><AccessKeyId>{key_id}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>\
                 <SessionToken>{token}</SessionToken><Expiration>{expiration}</Expiration></Credentials>\
                 <AssumedRoleUser><Arn>{ROLE}/moat</Arn></AssumedRoleUser></AssumeRoleResult></AssumeRoleResponse>"
            );
            Ok(Response::new(Full::new(Bytes::from(xml))))
        }
        Err(why) => Ok(refused(&mut calls, why)),
    }
}

/// GetCallerIdentity signed by an issued key, with its session token.
fn caller_identity(parts: &hyper::http::request::Parts, body: &[u8], calls: &mut Calls) -> Response<Full<Bytes>> {
    let issued = calls.issued.clone();
    let secret_for = |key_id: &str| issued.get(key_id).map(|(secret, _)| secret.clone());
    let key_id = match check_signature(parts, body, &secret_for) {
        Ok(key_id) => key_id,
        Err(why) => return refused(calls, why),
    };
    let token = parts.headers.get("x-amz-security-token").and_then(|v| v.to_str().ok());
    if token != issued.get(&key_id).map(|(_, token)| token.as_str()) {
        return refused(calls, format!("{key_id} came without its session token"));
    }
    calls.identities.push(key_id);
    let xml = "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
               <GetCallerIdentityResult><Arn>arn:aws:sts::123456789012:assumed-role/moat-e2e/moat</Arn>\
               <UserId>AROAMOATE2E:moat</UserId><Account>123456789012</Account></GetCallerIdentityResult>\
               <ResponseMetadata><RequestId>moat-e2e</RequestId></ResponseMetadata></GetCallerIdentityResponse>";
    Response::new(Full::new(Bytes::from(xml)))
}

fn refused(calls: &mut Calls, why: String) -> Response<Full<Bytes>> {
    calls.invalid.push(why.clone());
    let xml = format!(
        "<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code><Message>{why}</Message></Error></ErrorResponse>"
    );
    let mut response = Response::new(Full::new(Bytes::from(xml)));
    *response.status_mut() = hyper::StatusCode::FORBIDDEN;
    response
}

/// Recomputes the request's signature with the secret of the key that
/// signed it (`secret_for`), as STS does; returns that key's id.
fn check_signature(
    parts: &hyper::http::request::Parts,
    body: &[u8],
    secret_for: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or(format!("no {name} header"))
    };
    let authorization = header("authorization")?;
    let fields = authorization
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let field = |name: &str| {
        fields
            .split(", ")
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
            .ok_or(format!("no {name} in {authorization}"))
    };
    let credential = field("Credential")?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, "aws4_request"] = scope.as_slice() else {
        return Err(format!("bad credential scope {credential}"));
    };
    let secret = secret_for(key_id).ok_or(format!("signed by unknown key {key_id}"))?;
    if *region != REGION || *service != "sts" {
        return Err(format!("signed for {region}/{service}"));
    }
    let amz_date = header("x-amz-date")?;
    if !amz_date.starts_with(date) {
        return Err(format!("x-amz-date {amz_date} is not of {date}"));
    }
    let signed = field("SignedHeaders")?;
    let values: Vec<(String, String)> = signed
        .split(';')
        .map(|name| header(name).map(|value| (name.to_string(), value)))
        .collect::<Result<_, _>>()?;
    let headers: Vec<(&str, &str)> = values.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let request = RequestToSign {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: &[],
        headers: &headers,
        payload: body,
    };
    let (canonical, _) = sigv4::canonical_request(&request);
    let scope = Scope {
        amz_date: &amz_date,
        region: REGION,
        service: "sts",
    };
    let expected = sigv4::signature(&secret, &scope, &canonical);
    if field("Signature")? != expected {
        return Err(format!("SignatureDoesNotMatch for {key_id}"));
    }
    Ok(key_id.to_string())
}

/// The AssumeRole parameters moat sends.
fn check_assume_role(form: &str) -> Result<(), String> {
    let role = format!("RoleArn={}", sigv4::uri_encode(ROLE));
    if !(form.contains("Action=AssumeRole") && form.contains(&role) && form.contains("DurationSeconds=900")) {
        return Err(format!("unexpected form {form}"));
    }
    Ok(())
}

/// A home whose daemon trusts the fake STS's CA and resolves its name,
/// and a shared credentials file with the host's keys as profile `work`.
fn home_with_sts() -> Option<(Home, FakeSts, std::path::PathBuf)> {
    let home = Home::new()?;
    std::fs::create_dir_all(home.home()).unwrap();
    let sts = FakeSts::start(&home.root);
    let config = format!(
        "extra_ca_file: {}\nresolve:\n  {STS_HOST}: {}\n",
        sts.ca_file.display(),
        docker_bridge_address()
    );
    std::fs::write(home.home().join("config.yaml"), config).unwrap();
    let credentials = home.root.join("aws-credentials");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = {DECOY_KEY_ID}\naws_secret_access_key = decoy-secret\n\n\
             [work]\naws_access_key_id = {HOST_KEY_ID}\naws_secret_access_key = {HOST_SECRET}\n"
        ),
    )
    .unwrap();
    Some((home, sts, credentials))
}

/// `moat grant aws` with the host's keys from profile `work`.
fn grant_aws(home: &Home, sts: &FakeSts, credentials: &std::path::Path) {
    let endpoint = format!("https://{STS_HOST}:{}/", sts.port);
    let granted = home
        .moat()
        .args(["grant", "aws", "--role-arn", ROLE, "--aws-profile", "work"])
        .args(["--region", REGION, "--sts-endpoint", &endpoint])
        .env("AWS_SHARED_CREDENTIALS_FILE", credentials)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .unwrap();
    assert!(granted.status.success(), "{}", text(&granted.stderr));
    assert!(text(&granted.stderr).contains(HOST_KEY_ID), "{}", text(&granted.stderr));
}

/// moat's base image with Debian's AWS CLI, built once per Dockerfile
/// (tagged by its hash).
fn awscli_image() -> String {
    use std::hash::{Hash, Hasher};
    let dockerfile = "FROM moat-base:bookworm\nRUN apt-get update && apt-get install -y --no-install-recommends \
                      awscli && rm -rf /var/lib/apt/lists/*\n";
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dockerfile.hash(&mut hasher);
    let tag = format!("moat-test-awscli:{:016x}", hasher.finish());
    if docker_exists("image", &tag) {
        return tag;
    }
    let mut build = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &tag, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    build.stdin.take().unwrap().write_all(dockerfile.as_bytes()).unwrap();
    let built = build.wait_with_output().unwrap();
    assert!(built.status.success(), "building {tag}: {}", text(&built.stderr));
    tag
}

/// The container's way to credentials: the command its AWS config names.
const CREDENTIAL_PROCESS: &str = r#"cmd=$(sed -n 's/^credential_process = //p' "$AWS_CONFIG_FILE"); exec $cmd"#;

#[test]
fn a_run_gets_short_lived_role_keys_and_never_the_hosts_secret() {
    let Some((home, sts, credentials)) = home_with_sts() else {
        return;
    };
    grant_aws(&home, &sts, &credentials);
    assert_eq!(sts.valid_calls(), 1, "the grant checks the role once");

    let started = home.run(&[
        "run", "-d", "--policy", "strict", "--grant", "aws", "--", "sleep", "300",
    ]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    let run = home.wait_for_run(Duration::from_secs(30));
    let exec = |script: &str| home.run(&["exec", &run, "--", "sh", "-c", script]);

    let first = exec(CREDENTIAL_PROCESS);
    let first_out = text(&first.stdout);
    assert!(first.status.success(), "{first_out}{}", text(&first.stderr));
    let issued: serde_json::Value = serde_json::from_str(first_out.trim()).unwrap();
    assert_eq!(issued["Version"], 1);
    assert_eq!(issued["AccessKeyId"], format!("{TEMP_KEY_PREFIX}00002"));
    assert_eq!(issued["SecretAccessKey"], "fake-sts-temporary-secret-2");
    assert_eq!(issued["SessionToken"], "fake-sts-session-token-2+/=");
    let expires = chrono::DateTime::parse_from_rfc3339(issued["Expiration"].as_str().unwrap()).unwrap();
    let lifetime = expires.to_utc() - chrono::Utc::now();
    assert!(
        lifetime > chrono::TimeDelta::minutes(14) && lifetime <= chrono::TimeDelta::minutes(15),
        "{lifetime}"
    );
    // Cached: the second request is answered without STS.
    let second = exec(CREDENTIAL_PROCESS);
    assert_eq!(text(&second.stdout), first_out);
    assert_eq!(sts.valid_calls(), 2);

    // Without the run's token (straight to the proxy): nothing.
    let port = home.proxy_port().unwrap();
    let anonymous = exec(&format!(
        "curl -s --noproxy '*' -o /dev/null -w '%{{http_code}}' http://moat-proxy:{port}/aws/credentials"
    ));
    assert_eq!(text(&anonymous.stdout), "407");

    let config = exec("cat \"$AWS_CONFIG_FILE\"; touch \"$AWS_CONFIG_FILE\" 2>/dev/null && echo writable");
    let config_text = text(&config.stdout);
    assert!(config_text.contains(&format!("region = {REGION}")), "{config_text}");
    assert!(!config_text.contains("writable"), "the AWS config is read-only");

    // The host's secret is nowhere: files, environment, inspect, trace, audit.
    let scan = docker(&[
        "exec",
        "-u",
        "0",
        &run,
        "sh",
        "-c",
        &format!(
            "grep -rlF -e '{HOST_SECRET}' -e '{HOST_KEY_ID}' / --exclude-dir=proc --exclude-dir=sys \
             --exclude-dir=dev 2>/dev/null; true"
        ),
    ]);
    assert!(scan.trim().is_empty(), "host key material found in {scan}");
    let env = docker(&["exec", &run, "env"]);
    assert!(!env.contains(HOST_SECRET) && !env.contains(HOST_KEY_ID), "{env}");
    assert!(env.contains("AWS_CONFIG_FILE=/etc/moat/aws/config"), "{env}");
    assert!(!docker(&["inspect", &run]).contains(HOST_SECRET));
    let run_dir = home.home().join("runs").join(&run);
    let trace = std::fs::read_to_string(run_dir.join("network.jsonl")).unwrap();
    assert!(trace.contains("credential endpoint aws"), "{trace}");
    let audit = std::fs::read_to_string(run_dir.join("audit.jsonl")).unwrap();
    assert!(
        audit.contains("aws_credentials_issued") && audit.contains(ROLE),
        "{audit}"
    );
    for record in [&trace, &audit, &first_out, &text(&first.stderr)] {
        assert!(!record.contains(HOST_SECRET), "{record}");
    }
    for log in [&trace, &audit] {
        assert!(
            !log.contains("fake-sts-temporary-secret"),
            "an issued secret in a log: {log}"
        );
    }
    for staged in std::fs::read_dir(run_dir.join("grants")).unwrap() {
        let contents = std::fs::read_to_string(staged.unwrap().path()).unwrap();
        assert!(!contents.contains(HOST_SECRET) && !contents.contains(HOST_KEY_ID));
    }

    // Revoke reaches the live run: the next request is refused, STS untouched.
    let revoked = home.run(&["revoke", "aws"]);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let after = exec(CREDENTIAL_PROCESS);
    assert!(
        !after.status.success(),
        "credentials after revoke: {}",
        text(&after.stdout)
    );
    assert!(text(&after.stderr).contains("revoked"), "{}", text(&after.stderr));
    assert!(!text(&after.stdout).contains(TEMP_KEY_PREFIX));
    assert_eq!(sts.valid_calls(), 2);
}

#[test]
fn the_aws_cli_in_a_run_signs_its_requests_with_the_issued_keys() {
    let Some((home, sts, credentials)) = home_with_sts() else {
        return;
    };
    let image = awscli_image();
    grant_aws(&home, &sts, &credentials);
    let endpoint = format!("https://{STS_HOST}:{}/", sts.port);
    let allow = format!("{STS_HOST}:{}", sts.port);
    let out = home.run(&[
        "run",
        "--image",
        &image,
        "--policy",
        "strict",
        "--allow-host",
        &allow,
        "--grant",
        "aws",
        "--",
        "aws",
        "sts",
        "get-caller-identity",
        "--endpoint-url",
        &endpoint,
        "--output",
        "json",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let identity: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(identity["Arn"], "arn:aws:sts::123456789012:assumed-role/moat-e2e/moat");
    // The CLI signed with the keys the daemon got for this run (the
    // second AssumeRole: the first checked the grant), token included.
    assert_eq!(sts.identity_calls(), [format!("{TEMP_KEY_PREFIX}00002")]);
    assert_eq!(sts.valid_calls(), 2);
}
