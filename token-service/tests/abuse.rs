//! The token endpoint under abuse (issue 11): each attack measured against the real
//! binary, replayed, and its refusal asserted — the 150,000-parameter form, too many
//! and repeated parameters, bodies and headers that trickle, a connection flood, a
//! full argon2 pool, repeated wrong secrets (and that they cannot lock the holder
//! out), and the same limits on revoke and introspect.
//!
//! Requests that must not look like a well-behaved client's are written by hand over
//! TLS ([`Raw`]); the others use the support's HTTP client. A second client address is
//! another loopback address (127.0.0.2): the service sees it as another source.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN_ID: &str = "gatehouse-admin";
const ADMIN_SECRET: &str = "admin-secret-0123456789";
const GRANT: &str = "grant_type=client_credentials";

/// Another client address than the tests' default (127.0.0.1).
const HOLDER: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));

/// How long a refusal that must come "at once" may take on a loaded CI machine.
const PROMPTLY: Duration = Duration::from_secs(10);

fn temp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("gatehouse-abuse-")
        .tempdir()
        .unwrap()
}

fn options(dir: &tempfile::TempDir) -> Options {
    Options::embedded(dir.path()).with_admin(ADMIN_ID, ADMIN_SECRET)
}

/// The measured form: 150,000 parameters, 1.2 MB.
fn huge_form() -> String {
    let body = (0..150_000)
        .map(|i| format!("p{i}=v"))
        .collect::<Vec<_>>()
        .join("&");
    assert!(body.len() > 1_100_000, "{}", body.len());
    body
}

/// A form of `n` parameters: the grant type and `n - 1` others.
fn form_of(n: usize) -> String {
    let mut form = GRANT.to_string();
    for i in 1..n {
        form.push_str(&format!("&extra{i}=x"));
    }
    form
}

/// An HTTP/1.1 exchange written by hand over TLS.
struct Raw {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

/// What came back on a [`Raw`] connection.
#[derive(Debug)]
struct RawAnswer {
    status: u16,
    head: String,
    body: String,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// An RFC 6749 error of this status and code, closing the connection.
    fn assert_closing_error(&self, status: u16, error: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.json()["error"], error, "{self:?}");
        assert_eq!(self.header("cache-control").as_deref(), Some("no-store"));
        assert_eq!(self.header("connection").as_deref(), Some("close"));
    }
}

impl Raw {
    async fn open(ts: &TokenService) -> Raw {
        Raw {
            stream: ts.connect(None).await,
        }
    }

    /// Writes `bytes`; false if the server has closed the connection.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok() && self.stream.flush().await.is_ok()
    }

    /// The head of a form POST to `path` with these credentials, declaring
    /// `content_length` (none: chunked).
    fn head(path: &str, content_length: Option<usize>) -> String {
        let length = match content_length {
            Some(n) => format!("content-length: {n}\r\n"),
            None => "transfer-encoding: chunked\r\n".to_string(),
        };
        format!(
            "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/x-www-form-urlencoded\r\nauthorization: {}\r\n{length}\r\n",
            basic_header(ADMIN_ID, ADMIN_SECRET)
        )
    }

    /// Reads one response (head, and its body by `content-length`), within `PROMPTLY`.
    async fn response(&mut self) -> RawAnswer {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(PROMPTLY, async {
            loop {
                if let Some(answer) = parse_response(&buf) {
                    return Some(answer);
                }
                let mut chunk = [0u8; 4096];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return parse_response(&buf),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        match read {
            Ok(Some(answer)) => answer,
            Ok(None) => panic!(
                "the connection ended without a response: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Err(_) => panic!(
                "no response within {PROMPTLY:?}: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }

    /// Whether the server closes the connection within `within` (reading and dropping
    /// anything it still sends).
    async fn closed_within(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, async {
            let mut chunk = [0u8; 4096];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }
}

fn parse_response(buf: &[u8]) -> Option<RawAnswer> {
    let text = String::from_utf8_lossy(buf);
    let end = text.find("\r\n\r\n")?;
    let head = text[..end].to_string();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = &text[end + 4..];
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    (body.len() >= length).then(|| RawAnswer {
        status,
        head,
        body: body[..length].to_string(),
    })
}

#[tokio::test]
async fn the_150_000_parameter_form_is_refused_413_before_it_is_read() {
    let dir = temp();
    let ts = TokenService::start(options(&dir));
    let form = huge_form();

    // Declared by Content-Length: answered before a single byte of the body is sent.
    let started = Instant::now();
    let mut raw = Raw::open(&ts).await;
    assert!(
        raw.send(Raw::head("/oauth2/token", Some(form.len())).as_bytes())
            .await
    );
    let answer = raw.response().await;
    answer.assert_closing_error(413, "invalid_request");
    assert!(
        answer.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("16384 bytes"),
        "{answer:?}"
    );
    assert!(
        raw.closed_within(PROMPTLY).await,
        "the connection is closed"
    );

    // Chunked, without a length: refused once the cap is passed, while 95% of the
    // form is still unsent.
    let mut raw = Raw::open(&ts).await;
    assert!(raw.send(Raw::head("/oauth2/token", None).as_bytes()).await);
    let first = &form.as_bytes()[..64 * 1024];
    let chunk = [format!("{:x}\r\n", first.len()).as_bytes(), first, b"\r\n"].concat();
    raw.send(&chunk).await;
    raw.response()
        .await
        .assert_closing_error(413, "invalid_request");
    assert!(
        started.elapsed() < PROMPTLY,
        "refused promptly: {:?}",
        started.elapsed()
    );

    // The service is fine: a valid request right after.
    ts.token(ADMIN_ID, ADMIN_SECRET, "").await;
}

/// With the body cap raised past the form's size, the parameter cap refuses it: the
/// parse stops at the 33rd pair (the old parser took 18 s of CPU on this form).
#[tokio::test]
async fn the_150_000_parameter_form_is_refused_400_at_the_parameter_cap_when_bodies_may_be_large() {
    let dir = temp();
    let ts = TokenService::start(
        options(&dir).with_env("GATEHOUSE_TOKEN_MAX_BODY_BYTES", 4 * 1024 * 1024),
    );
    let form = huge_form();
    let started = Instant::now();
    let (a, b, c) = tokio::join!(
        ts.post_form("/oauth2/token", Some((ADMIN_ID, ADMIN_SECRET)), &form),
        ts.post_form("/oauth2/token", Some((ADMIN_ID, ADMIN_SECRET)), &form),
        ts.post_form("/oauth2/token", Some((ADMIN_ID, ADMIN_SECRET)), &form),
    );
    for answer in [a, b, c] {
        answer.assert_error(400, "invalid_request");
        assert!(
            answer.text().contains("more than 32 parameters"),
            "{}",
            answer.text()
        );
    }
    assert!(
        started.elapsed() < PROMPTLY,
        "three at once, refused promptly: {:?}",
        started.elapsed()
    );
    ts.token(ADMIN_ID, ADMIN_SECRET, "").await;
}

#[tokio::test]
async fn too_many_and_repeated_parameters_are_invalid_requests() {
    let dir = temp();
    let ts = TokenService::start(options(&dir));
    let auth = Some((ADMIN_ID, ADMIN_SECRET));
    // 32 parameters are fine (unknown ones are ignored, RFC 6749 §3.2); 33 are not.
    let answer = ts.post_form("/oauth2/token", auth, &form_of(32)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    ts.post_form("/oauth2/token", auth, &form_of(33))
        .await
        .assert_error(400, "invalid_request");
    // A repeated parameter, adjacent or far apart.
    for form in [
        format!("{GRANT}&{GRANT}"),
        format!("{GRANT}&scope=a&extra=1&scope=b"),
    ] {
        let answer = ts.post_form("/oauth2/token", auth, &form).await;
        answer.assert_error(400, "invalid_request");
        assert!(answer.text().contains("repeated"), "{}", answer.text());
    }
}

#[tokio::test]
async fn a_body_or_headers_that_trickle_past_the_timeout_are_cut_off() {
    let dir = temp();
    let ts = TokenService::start(
        options(&dir)
            .with_env("GATEHOUSE_TOKEN_BODY_READ_TIMEOUT_SECONDS", 1)
            .with_env("GATEHOUSE_TOKEN_HEADER_READ_TIMEOUT_SECONDS", 1),
    );

    // A body of 40 bytes, one byte every 200 ms: answered 408 after the 1 s timeout
    // and closed, with most of it unsent.
    let mut raw = Raw::open(&ts).await;
    assert!(
        raw.send(Raw::head("/oauth2/token", Some(40)).as_bytes())
            .await
    );
    let started = Instant::now();
    let trickle = async {
        for byte in GRANT.bytes().take(40) {
            if !raw.send(&[byte]).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), trickle).await;
    let answer = raw.response().await;
    answer.assert_closing_error(408, "invalid_request");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(
        raw.closed_within(PROMPTLY).await,
        "the connection is closed"
    );

    // Headers trickling past their timeout: the connection is closed.
    let mut raw = Raw::open(&ts).await;
    let mut cut = false;
    for byte in "POST /oauth2/token HTTP/1.1\r\nhost: localhost\r\nx-slow: ".bytes() {
        if !raw.send(&[byte]).await {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        cut || raw.closed_within(PROMPTLY).await,
        "trickled headers are cut off"
    );

    // An idle kept-alive connection does not keep its place either.
    let tls = ts.connect(None).await;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get("/health")
        .header("host", "localhost")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    tokio::time::timeout(PROMPTLY, connection)
        .await
        .expect("the idle connection is closed by the service")
        .unwrap()
        .ok();
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once() {
    let dir = temp();
    let ts = TokenService::start(options(&dir).with_env("GATEHOUSE_TOKEN_MAX_CONNECTIONS", 4));
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(ts.connect(None).await);
    }
    assert!(
        ts.try_connect(None).await.is_err(),
        "the fifth connection is closed before its handshake"
    );
    drop(held.pop());
    gatehouse_testkit::eventually_async("a place to be free again", || async {
        ts.try_connect(None).await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_argon2_pool_is_503_with_retry_after_at_once() {
    let dir = temp();
    let ts = std::sync::Arc::new(TokenService::start(
        options(&dir)
            .with_env("GATEHOUSE_TOKEN_ARGON2_WORKERS", 1)
            .with_env("GATEHOUSE_TOKEN_ARGON2_QUEUE", 0)
            .with_env("GATEHOUSE_TOKEN_FAILURE_BUDGET_PER_CLIENT", 100_000)
            .with_env("GATEHOUSE_TOKEN_FAILURE_BUDGET_PER_ADDRESS", 100_000),
    ));
    let mut attempts = tokio::task::JoinSet::new();
    for i in 0..48 {
        let ts = ts.clone();
        attempts.spawn(async move {
            ts.post_form(
                "/oauth2/token",
                Some((ADMIN_ID, &format!("wrong-{i}"))),
                GRANT,
            )
            .await
        });
    }
    let (mut busy, mut wrong) = (0, 0);
    while let Some(answer) = attempts.join_next().await {
        let answer = answer.unwrap();
        match answer.status {
            503 => {
                answer.assert_error(503, "temporarily_unavailable");
                assert_eq!(answer.header("retry-after"), Some("1"));
                busy += 1;
            }
            _ => {
                answer.assert_error(401, "invalid_client");
                wrong += 1;
            }
        }
    }
    assert!(busy > 0, "one worker, no queue: some attempts find it busy");
    assert!(wrong > 0, "and some are checked");
    // The pool frees up: the right secret works.
    gatehouse_testkit::eventually_async("the right secret to be checked", || async {
        ts.post_form("/oauth2/token", Some((ADMIN_ID, ADMIN_SECRET)), GRANT)
            .await
            .status
            == 200
    })
    .await;
}

/// The budget/backoff limits of these tests: 3 failures per client id, 6 per address,
/// backoff from 1 s up to 2 s.
fn throttled(dir: &tempfile::TempDir) -> TokenService {
    TokenService::start(
        options(dir)
            .with_env("GATEHOUSE_TOKEN_FAILURE_BUDGET_PER_CLIENT", 3)
            .with_env("GATEHOUSE_TOKEN_FAILURE_BUDGET_PER_ADDRESS", 6)
            .with_env("GATEHOUSE_TOKEN_FAILURE_BACKOFF_MAX_SECONDS", 2),
    )
}

fn retry_after(answer: &Answer) -> Duration {
    Duration::from_secs(
        answer
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap(),
    )
}

/// Repeats a failing `attempt` until it is refused 429 `slow_down` (each 401 on the way
/// is a failure spent; on a slow machine an attempt may arrive after a backoff ended,
/// which only lengthens the next one); the refusal.
async fn until_refused<F: std::future::Future<Output = Answer>>(
    mut attempt: impl FnMut() -> F,
) -> Answer {
    for _ in 0..12 {
        let answer = attempt().await;
        if answer.status == 429 {
            answer.assert_error(429, "slow_down");
            return answer;
        }
        answer.assert_error(401, "invalid_client");
    }
    panic!("the failures were never refused");
}

/// [`until_refused`], then one more failure once that backoff is over: the next one is
/// the cap's (2 s), room for the checks that follow.
async fn blocked_for_the_cap<F: std::future::Future<Output = Answer>>(
    mut attempt: impl FnMut() -> F,
) {
    let refused = until_refused(&mut attempt).await;
    tokio::time::sleep(retry_after(&refused)).await;
    attempt().await.assert_error(401, "invalid_client");
}

#[tokio::test]
async fn repeated_wrong_secrets_are_429_until_the_backoff_ends_then_the_right_secret_works() {
    let dir = temp();
    let ts = throttled(&dir);
    let wrong = || ts.post_form("/oauth2/token", Some((ADMIN_ID, "wrong-secret")), GRANT);
    // The budget (3) and the failure that spends it are checked: 401.
    for _ in 0..4 {
        wrong().await.assert_error(401, "invalid_client");
    }
    // Then 429 with Retry-After, the backoff doubling with each further failure.
    let first = until_refused(wrong).await;
    assert!(retry_after(&first) <= Duration::from_secs(2));
    tokio::time::sleep(retry_after(&first)).await;
    wrong().await.assert_error(401, "invalid_client");
    let second = wrong().await;
    second.assert_error(429, "slow_down");
    assert_eq!(
        retry_after(&second),
        Duration::from_secs(2),
        "doubled, at the cap"
    );
    // The attacker's address is the holder's here: the right secret waits too...
    let waits = ts
        .post_form("/oauth2/token", Some((ADMIN_ID, ADMIN_SECRET)), GRANT)
        .await;
    waits.assert_error(429, "slow_down");
    // ...for the backoff only.
    tokio::time::sleep(retry_after(&waits)).await;
    ts.token(ADMIN_ID, ADMIN_SECRET, "").await;
    // The success cleared the client id's record: a mistake is a 401 again.
    wrong().await.assert_error(401, "invalid_client");
}

#[tokio::test]
async fn an_attacker_cannot_lock_the_holder_out() {
    let dir = temp();
    let ts = throttled(&dir);
    until_refused(|| ts.post_form("/oauth2/token", Some((ADMIN_ID, "wrong-secret")), GRANT)).await;
    // The holder, at an address with no failure, is checked and gets its token.
    let holder = ts
        .post_form_from(
            HOLDER,
            "/oauth2/token",
            Some((ADMIN_ID, ADMIN_SECRET)),
            GRANT,
        )
        .await;
    assert_eq!(holder.status, 200, "{}", holder.text());

    // The attacker spends its address's budget (6) on other ids: then every id from it
    // is refused before argon2, even the right secret of an id it has not proved...
    let (ts, mut i) = (&ts, 0);
    let refused = until_refused(|| {
        i += 1;
        let id = format!("guess-{i}");
        async move { ts.post_form("/oauth2/token", Some((&id, "x")), GRANT).await }
    })
    .await;
    assert!(refused.text().contains("address"), "{}", refused.text());
    // ...but a secret proved recently passes (it costs no argon2), even from there.
    let remembered = ts
        .post_form("/oauth2/token", Some((ADMIN_ID, ADMIN_SECRET)), GRANT)
        .await;
    assert_eq!(remembered.status, 200, "{}", remembered.text());
    // No block outlasts the attack by more than the cap (2 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    ts.post_form("/oauth2/token", Some(("anyone", "x")), GRANT)
        .await
        .assert_error(401, "invalid_client");
}

#[tokio::test]
async fn revoke_and_introspect_are_under_the_same_limits() {
    let dir = temp();
    let ts = throttled(&dir);
    let token = ts.token(ADMIN_ID, ADMIN_SECRET, "").await.access_token;
    let auth = Some((ADMIN_ID, ADMIN_SECRET));
    for path in ["/oauth2/revoke", "/oauth2/introspect"] {
        // The body cap, before reading.
        let mut raw = Raw::open(&ts).await;
        assert!(raw.send(Raw::head(path, Some(1_200_000)).as_bytes()).await);
        raw.response()
            .await
            .assert_closing_error(413, "invalid_request");
        // The parameter cap (33) and repeated parameters.
        let many = format!("token={token}{}", &form_of(33)[GRANT.len()..]);
        ts.post_form(path, auth, &many)
            .await
            .assert_error(400, "invalid_request");
        ts.post_form(path, auth, &format!("token={token}&token={token}"))
            .await
            .assert_error(400, "invalid_request");
    }
    // Failures on introspect and revoke spend the budget the token endpoint checks.
    let wrong = Some((ADMIN_ID, "wrong-secret"));
    let form = format!("token={token}");
    let mut n = 0;
    blocked_for_the_cap(|| {
        n += 1;
        let path = ["/oauth2/introspect", "/oauth2/revoke"][n % 2];
        ts.post_form(path, wrong, &form)
    })
    .await;
    for (path, body) in [
        ("/oauth2/revoke", form.as_str()),
        ("/oauth2/introspect", &form),
        ("/oauth2/token", GRANT),
    ] {
        ts.post_form(path, wrong, body)
            .await
            .assert_error(429, "slow_down");
    }
    // The holder elsewhere still introspects.
    let answer = ts
        .post_form_from(HOLDER, "/oauth2/introspect", auth, &form)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["active"], true);
}
