//! End-to-end tests of the client module (`partner_center`) against the emulator, over real HTTP on
//! loopback. The two sides were written separately from microsoft-apis.md and share no types: this
//! file is the only place they meet. Each test names the situation a user would be in.
//!
//! Timing: retry policies use millisecond backoffs; where a wait is the behaviour under test
//! (Retry-After, slow_down), it is read from the emulator's request log and bounded in one direction.

mod common;

use common::{emulator, fast_knobs};
use csp_onboard::cloud::{Cloud, DEFAULT_PUBLIC_CLIENT_ID, Endpoints, PARTNER_CENTER_APP_ID};
use csp_onboard::emulator::{
    Emulator, FaultKind, FaultRule, Knobs, LoggedRequest, ThrottleRule, UserKind,
};
use csp_onboard::exit::Exit;
use csp_onboard::partner_center::{
    ADMIN_AGENTS_GROUP, ApiError, Graph, HttpClient, Membership, PartnerCenter, PollEvent,
    RetryPolicy, SignInClient, TokenResponse, VerifyError, VerifyEvent, VerifyOptions,
    browser_sign_in, client_credentials, device_code_poll, device_code_start, graph_sign_in_scopes,
    verify_secret,
};
use csp_onboard::secret::Secret;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

// ---------------------------------------------------------------------------------------------
// Scaffolding
// ---------------------------------------------------------------------------------------------

/// Fast retries; Retry-After honoured up to 5 s; replication ridden out for up to 8 s.
fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_retry_after: Duration::from_secs(5),
        replication_budget: Duration::from_secs(8),
        request_timeout: Duration::from_secs(2),
    }
}

fn verify_opts(budget: Duration) -> VerifyOptions {
    VerifyOptions {
        budget,
        consecutive: 3,
        spacing: Duration::from_millis(50),
        fast_phase: budget,
        max_backoff: Duration::from_millis(300),
        app_is_new: true,
        key_is_new: true,
    }
}

/// Tokens from a grant sent by hand.
struct Tokens {
    access_token: Secret,
    refresh_token: Option<Secret>,
}

/// An OAuth error answer (§2.5): the status and the `error` field.
#[derive(Debug)]
struct OAuthRefusal {
    status: u16,
    error: String,
}

fn by_hand() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a plain HTTP client")
}

/// `https://api.partnercenter.microsoft.com/user_impersonation`: App+User Partner Center.
fn pc_user_scope(ep: &Endpoints) -> String {
    format!("{}/user_impersonation", ep.partner_center_resource)
}

struct Env {
    emu: Emulator,
    ep: Endpoints,
    http: HttpClient,
}

impl Env {
    async fn new(knobs: Knobs) -> Env {
        let emu = emulator(knobs).await;
        let ep = Endpoints::from_urls(
            Cloud::Custom,
            &emu.authority_url(),
            &emu.graph_url(),
            &emu.partner_center_url(),
        )
        .expect("loopback endpoints");
        let http = HttpClient::new()
            .expect("http client")
            .with_policy(policy());
        Env { emu, ep, http }
    }

    fn client(&self) -> SignInClient {
        SignInClient {
            client_id: DEFAULT_PUBLIC_CLIENT_ID.to_string(),
            tenant: "organizations".to_string(),
        }
    }

    fn tenant(&self) -> String {
        self.emu.tenant_id()
    }

    /// Device-code sign-in for Graph, approving the code on the first "pending" answer.
    async fn sign_in(&self) -> TokenResponse {
        let dc = device_code_start(
            &self.http,
            &self.ep,
            &self.client(),
            &graph_sign_in_scopes(&self.ep),
        )
        .await
        .expect("device code");
        let emu = self.emu.clone();
        let code = dc.user_code.clone();
        device_code_poll(&self.http, &self.ep, &self.client(), &dc, move |e| {
            if e == PollEvent::Pending {
                emu.approve_device_code(&code);
            }
        })
        .await
        .expect("signed in")
    }

    async fn graph_as(&self, who: UserKind) -> Graph {
        self.emu.update_knobs(|k| k.signed_in_user = who);
        let t = self.sign_in().await;
        Graph::new(self.http.clone(), &self.ep, t.access_token)
    }

    async fn graph(&self) -> Graph {
        self.graph_as(UserKind::GlobalAdmin).await
    }

    /// An App+User Partner Center token: Graph sign-in, then the refresh token for Partner Center.
    async fn pc_user_token(&self) -> Secret {
        let t = self.sign_in().await;
        let rt = t.refresh_token.expect("a refresh token (offline_access)");
        self.refresh(&rt, &pc_user_scope(&self.ep))
            .await
            .expect("Partner Center token from the refresh token")
            .access_token
    }

    async fn pc_user(&self) -> PartnerCenter {
        PartnerCenter::new(self.http.clone(), &self.ep, self.pc_user_token().await)
    }

    /// The refresh-token grant (§2.3), sent by hand: csp-onboard itself does not use it, and the
    /// emulator keeps serving it for users who test their own automation.
    async fn refresh(&self, rt: &Secret, scope: &str) -> Result<Tokens, OAuthRefusal> {
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.ep.authority.as_str().trim_end_matches('/'),
            self.client().tenant
        );
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", DEFAULT_PUBLIC_CLIENT_ID),
            ("refresh_token", rt.expose()),
            ("scope", scope),
        ];
        let r = by_hand()
            .post(url)
            .form(&form)
            .send()
            .await
            .expect("token answer");
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await.expect("a JSON token answer");
        let text = |k: &str| v[k].as_str().map(Secret::new);
        match (status, text("access_token")) {
            (200, Some(access_token)) => Ok(Tokens {
                access_token,
                refresh_token: text("refresh_token"),
            }),
            _ => Err(OAuthRefusal {
                status,
                error: v["error"].as_str().unwrap_or_default().to_string(),
            }),
        }
    }

    /// A Partner Center GET sent by hand (for the App+User calls csp-onboard does not make):
    /// status and body.
    async fn pc_get(&self, token: &Secret, path: &str) -> (u16, serde_json::Value) {
        let url = format!(
            "{}/{path}",
            self.ep.partner_center.as_str().trim_end_matches('/')
        );
        let r = by_hand()
            .get(url)
            .bearer_auth(token.expose())
            .header("accept", "application/json")
            .header("ms-requestid", uuid::Uuid::new_v4().to_string())
            .header("ms-correlationid", uuid::Uuid::new_v4().to_string())
            .send()
            .await
            .expect("Partner Center answer");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let v = serde_json::from_str(text.trim_start_matches('\u{feff}')).unwrap_or_default();
        (status, v)
    }

    /// An app-only token for Partner Center with this app's secret.
    async fn pc_app(&self, app_id: &str, secret: &Secret) -> PartnerCenter {
        let t = client_credentials(
            &self.http,
            &self.ep,
            &self.tenant(),
            app_id,
            secret,
            &self.ep.partner_center_scope(),
        )
        .await
        .expect("app-only token");
        PartnerCenter::new(self.http.clone(), &self.ep, t.access_token)
    }

    fn log(&self, method: &str, path_contains: &str) -> Vec<LoggedRequest> {
        self.emu
            .requests()
            .into_iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.contains(path_contains))
            .collect()
    }

    fn token_polls(&self) -> Vec<LoggedRequest> {
        self.log("POST", "/oauth2/v2.0/token")
    }
}

fn statuses(log: &[LoggedRequest]) -> Vec<u16> {
    log.iter().map(|r| r.status).collect()
}

fn gap(a: &LoggedRequest, b: &LoggedRequest) -> Duration {
    b.at.duration_since(a.at)
}

/// Every string a user or a log could see of an error: Display, Debug, and the user-facing text.
fn shown(e: &ApiError) -> String {
    let u = e.to_user_error();
    format!("{e}\n{e:?}\n{}\n{:?}", u.message, u.hint)
}

fn one_year() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::days(365)
}

// ---------------------------------------------------------------------------------------------
// Sign-in: device code
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_approved_on_the_sign_in_page_gives_a_working_graph_token() {
    let env = Env::new(Knobs {
        device_code_interval_secs: Some(1),
        ..Default::default()
    })
    .await;
    let dc = device_code_start(
        &env.http,
        &env.ep,
        &env.client(),
        &graph_sign_in_scopes(&env.ep),
    )
    .await
    .expect("device code");
    assert_eq!(dc.verification_uri, env.emu.device_login_url());
    assert!(dc.message.contains(&dc.user_code), "{}", dc.message);
    assert_eq!(dc.interval, 1);
    assert!(env.emu.pending_user_codes().contains(&dc.user_code));

    let mut events = Vec::new();
    let emu = env.emu.clone();
    let code = dc.user_code.clone();
    let t = device_code_poll(&env.http, &env.ep, &env.client(), &dc, |e| {
        if e == PollEvent::Pending {
            assert!(emu.approve_device_code(&code), "the code is pending");
        }
        events.push(e);
    })
    .await
    .expect("signed in");
    assert_eq!(events, vec![PollEvent::Pending]);
    assert!(
        t.refresh_token.is_some(),
        "offline_access gives a refresh token"
    );
    assert_eq!(statuses(&env.token_polls()), vec![400, 200]);
    // Polls honour the interval: the second came at least 1 s after the first.
    let polls = env.token_polls();
    assert!(gap(&polls[0], &polls[1]) >= Duration::from_secs(1));

    let me = Graph::new(env.http.clone(), &env.ep, t.access_token)
        .me()
        .await
        .expect("me");
    assert_eq!(
        me.user_principal_name,
        env.emu.user_principal_name(UserKind::GlobalAdmin)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_auto_approved_after_two_polls_signs_the_configured_user_in() {
    let env = Env::new(Knobs {
        auto_approve_device_code_after_polls: Some(2),
        device_code_interval_secs: Some(0),
        signed_in_user: UserKind::AdminAgent,
        ..Default::default()
    })
    .await;
    let dc = device_code_start(
        &env.http,
        &env.ep,
        &env.client(),
        &graph_sign_in_scopes(&env.ep),
    )
    .await
    .expect("device code");
    let mut events = Vec::new();
    let t = device_code_poll(&env.http, &env.ep, &env.client(), &dc, |e| events.push(e))
        .await
        .expect("signed in");
    assert_eq!(events, vec![PollEvent::Pending, PollEvent::Pending]);
    assert_eq!(statuses(&env.token_polls()), vec![400, 400, 200]);
    let me = Graph::new(env.http.clone(), &env.ep, t.access_token)
        .me()
        .await
        .expect("me");
    assert_eq!(
        me.user_principal_name,
        env.emu.user_principal_name(UserKind::AdminAgent)
    );
}

/// A second poller of the same code (another terminal, a copied command) polls once between the
/// first one's polls, so the emulator answers `slow_down` to the first. RFC 8628 §3.5: the first
/// must then wait its interval plus 5 s. The code is approved only once `slow_down` was seen, so
/// the next poll is the one that measures the wait, whatever the scheduling of the two pollers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_slow_down_makes_the_client_poll_five_seconds_less_often() {
    let env = Env::new(Knobs {
        device_code_interval_secs: Some(1),
        ..Default::default()
    })
    .await;
    let dc = device_code_start(
        &env.http,
        &env.ep,
        &env.client(),
        &graph_sign_in_scopes(&env.ep),
    )
    .await
    .expect("device code");

    let a_events = Arc::new(Mutex::new(Vec::new()));
    let a = {
        let (http, ep, c, dc, ev) = (
            env.http.clone(),
            env.ep.clone(),
            env.client(),
            dc.clone(),
            a_events.clone(),
        );
        let (emu, code) = (env.emu.clone(), dc.user_code.clone());
        tokio::spawn(async move {
            device_code_poll(&http, &ep, &c, &dc, move |e| {
                if matches!(e, PollEvent::SlowDown { .. }) {
                    emu.approve_device_code(&code);
                }
                ev.lock().unwrap().push(e);
            })
            .await
        })
    };
    // The interfering poller starts half an interval later and polls once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let b = {
        let (http, ep, c, dc) = (env.http.clone(), env.ep.clone(), env.client(), dc.clone());
        tokio::spawn(async move {
            device_code_poll(&http, &ep, &c, &dc, move |e| {
                let _ = tx.send(e);
            })
            .await
        })
    };
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("the second poller polled");
    b.abort();

    let t = tokio::time::timeout(Duration::from_secs(30), a)
        .await
        .expect("the first poller finished")
        .expect("join");
    assert!(t.is_ok(), "{:?}", t.err());
    let events = a_events.lock().unwrap().clone();
    assert!(
        events.contains(&PollEvent::SlowDown { interval: 6 }),
        "interval 1 s + 5 s after slow_down: {events:?}"
    );

    let polls = env.token_polls();
    let last = polls.len() - 1;
    assert_eq!(polls[last].status, 200, "{:?}", statuses(&polls));
    assert_eq!(polls[last - 1].status, 400);
    let after = gap(&polls[last - 1], &polls[last]);
    assert!(
        after >= Duration::from_millis(5900),
        "after slow_down the next poll came only {after:?} later"
    );
    for w in polls[..last].windows(2) {
        assert!(gap(&w[0], &w[1]) < after, "polls got further apart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_declined_by_the_user_stops_polling_with_exit_3() {
    let env = Env::new(Knobs {
        device_code_interval_secs: Some(0),
        ..Default::default()
    })
    .await;
    let dc = device_code_start(
        &env.http,
        &env.ep,
        &env.client(),
        &graph_sign_in_scopes(&env.ep),
    )
    .await
    .expect("device code");
    let emu = env.emu.clone();
    let code = dc.user_code.clone();
    let e = device_code_poll(&env.http, &env.ep, &env.client(), &dc, move |_| {
        emu.decline_device_code(&code);
    })
    .await
    .expect_err("declined");
    assert!(e.is_oauth_error("authorization_declined"), "{e:?}");
    assert_eq!(e.exit(), Exit::SignIn);
    assert!(shown(&e).contains("declined"), "{}", shown(&e));
    // One pending answer, one "declined", and no poll after it.
    assert_eq!(statuses(&env.token_polls()), vec![400, 400]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.token_polls().len(), 2);
}

/// The emulator still answers for the first poll, but only after the code's lifetime has passed
/// (the latency knob delays the request): the server's `expired_token` ends the sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_that_expired_on_the_server_ends_sign_in_with_exit_3() {
    let env = Env::new(Knobs {
        device_code_interval_secs: Some(1),
        device_code_lifetime: Some(Duration::from_secs(2)),
        ..Default::default()
    })
    .await;
    let dc = device_code_start(
        &env.http,
        &env.ep,
        &env.client(),
        &graph_sign_in_scopes(&env.ep),
    )
    .await
    .expect("device code");
    assert_eq!(dc.expires_in, 2);
    env.emu
        .update_knobs(|k| k.latency = Duration::from_millis(1500));
    let e = device_code_poll(&env.http, &env.ep, &env.client(), &dc, |_| {})
        .await
        .expect_err("expired");
    assert!(e.is_oauth_error("expired_token"), "{e:?}");
    assert!(e.has_aadsts(70020), "{e:?}");
    assert_eq!(e.exit(), Exit::SignIn);
    assert!(
        e.hint()
            .unwrap_or_default()
            .contains("run the command again"),
        "{:?}",
        e.hint()
    );
    assert_eq!(statuses(&env.token_polls()), vec![400]);
}

/// Nobody approves: the client stops on its own when the code's lifetime is up, with the same
/// "expired" outcome, and does not keep polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_nobody_approves_expires_and_polling_stops() {
    let env = Env::new(Knobs {
        device_code_interval_secs: Some(1),
        device_code_lifetime: Some(Duration::from_secs(3)),
        ..Default::default()
    })
    .await;
    let dc = device_code_start(
        &env.http,
        &env.ep,
        &env.client(),
        &graph_sign_in_scopes(&env.ep),
    )
    .await
    .expect("device code");
    let e = device_code_poll(&env.http, &env.ep, &env.client(), &dc, |_| {})
        .await
        .expect_err("expired");
    assert!(e.is_oauth_error("expired_token"), "{e:?}");
    assert_eq!(e.exit(), Exit::SignIn);
    let n = env.token_polls().len();
    assert!((1..=3).contains(&n), "{n} polls in a 3 s lifetime at 1 s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.token_polls().len(), n, "no poll after giving up");
}

/// A device code redeemed once is not recognised a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_redeemed_twice_is_not_recognised_with_exit_3() {
    let env = Env::new(fast_knobs()).await;
    let dc = device_code_start(
        &env.http,
        &env.ep,
        &env.client(),
        &graph_sign_in_scopes(&env.ep),
    )
    .await
    .expect("device code");
    let again = dc.clone();
    device_code_poll(&env.http, &env.ep, &env.client(), &dc, |_| {})
        .await
        .expect("signed in");
    let n = env.token_polls().len();
    let e = device_code_poll(&env.http, &env.ep, &env.client(), &again, |_| {})
        .await
        .expect_err("already used");
    assert!(e.is_oauth_error("bad_verification_code"), "{e:?}");
    assert_eq!(e.exit(), Exit::SignIn);
    assert!(shown(&e).contains("not recognised"), "{}", shown(&e));
    assert_eq!(env.token_polls().len(), n + 1, "stops after one answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_access_blocking_device_code_is_a_permission_error_suggesting_the_browser() {
    let env = Env::new(Knobs {
        block_device_code: true,
        ..fast_knobs()
    })
    .await;
    let dc = device_code_start(
        &env.http,
        &env.ep,
        &env.client(),
        &graph_sign_in_scopes(&env.ep),
    )
    .await
    .expect("device code");
    let e = device_code_poll(&env.http, &env.ep, &env.client(), &dc, |_| {})
        .await
        .expect_err("blocked");
    assert!(e.has_aadsts(53003), "{e:?}");
    assert_eq!(e.exit(), Exit::Permission);
    assert_eq!(e.exit().code(), 4);
    assert!(
        e.hint().unwrap_or_default().contains("--auth browser"),
        "{:?}",
        e.hint()
    );
}

// ---------------------------------------------------------------------------------------------
// Sign-in: browser, refresh, client credentials
// ---------------------------------------------------------------------------------------------

/// Play the browser: GET the authorize URL, follow the redirect to the loopback listener, and
/// report the final status and page.
fn play_browser(url: &str) -> tokio::sync::oneshot::Receiver<Result<(u16, String), String>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let url = url.to_string();
    tokio::spawn(async move {
        let r = async {
            let client = reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(|e| e.to_string())?;
            let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let page = resp.text().await.map_err(|e| e.to_string())?;
            Ok((status, page))
        }
        .await;
        let _ = tx.send(r);
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sign_in_with_pkce_returns_to_the_loopback_listener_and_signs_in() {
    let env = Env::new(Knobs {
        block_device_code: true, // the browser is the way around a device-code block
        ..Default::default()
    })
    .await;
    let mut page = None;
    let mut shown_url = String::new();
    let t = browser_sign_in(
        &env.http,
        &env.ep,
        &env.client(),
        &graph_sign_in_scopes(&env.ep),
        |url| {
            page = Some(play_browser(url));
            true
        },
        |url| shown_url = url.to_string(),
    )
    .await
    .expect("signed in through the browser");
    let (status, html) = page
        .expect("the browser was opened")
        .await
        .expect("browser task")
        .expect("the browser reached the loopback page");
    assert_eq!(status, 200);
    assert!(html.contains("Signed in"), "{html}");

    let url = url::Url::parse(&shown_url).expect("the shown URL parses");
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(
        q.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    assert!(
        q.get("redirect_uri")
            .is_some_and(|r| r.starts_with("http://localhost:")),
        "{q:?}"
    );
    assert_eq!(env.log("GET", "/oauth2/v2.0/authorize").len(), 1);
    assert_eq!(statuses(&env.token_polls()), vec![200]);

    let me = Graph::new(env.http.clone(), &env.ep, t.access_token)
        .me()
        .await
        .expect("me");
    assert_eq!(
        me.user_principal_name,
        env.emu.user_principal_name(UserKind::GlobalAdmin)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_coming_back_with_an_error_fails_sign_in_without_redeeming_anything() {
    let env = Env::new(Knobs::default()).await;
    let mut page = None;
    let e = browser_sign_in(
        &env.http,
        &env.ep,
        &env.client(),
        &["https://unknown-resource.example.com/.default".to_string()],
        |url| {
            page = Some(play_browser(url));
            true
        },
        |_| {},
    )
    .await
    .expect_err("the authorize page answers with an error");
    assert!(e.is_oauth_error("invalid_resource"), "{e:?}");
    assert_eq!(e.exit(), Exit::SignIn);
    let (_, html) = page
        .expect("opened")
        .await
        .expect("browser task")
        .expect("the browser reached the loopback page");
    assert!(html.contains("did not complete"), "{html}");
    assert!(env.token_polls().is_empty(), "no code to redeem");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_from_the_graph_sign_in_gives_a_partner_center_token() {
    let env = Env::new(fast_knobs()).await;
    let t = env.sign_in().await;
    let rt = t.refresh_token.clone().expect("refresh token");
    let pc_token = env
        .refresh(&rt, &pc_user_scope(&env.ep))
        .await
        .expect("refresh");
    let newer = pc_token.refresh_token.clone().expect("a new refresh token");
    assert_ne!(
        newer.expose(),
        rt.expose(),
        "the newest refresh token is returned"
    );

    let (status, profile) = env
        .pc_get(&pc_token.access_token, "v1/profiles/organization")
        .await;
    assert_eq!(status, 200, "organization profile with the App+User token");
    assert_eq!(profile["tenantId"], env.tenant().as_str());

    // The newest refresh token works again (for Graph this time).
    let g = env
        .refresh(&newer, &env.ep.graph_scope())
        .await
        .expect("refresh with the newest token");
    Graph::new(env.http.clone(), &env.ep, g.access_token)
        .me()
        .await
        .expect("me");

    // The Graph token itself is not a Partner Center token.
    let e = PartnerCenter::new(env.http.clone(), &env.ep, t.access_token)
        .legal_business_profile()
        .await
        .expect_err("a Graph token is refused by Partner Center");
    assert_eq!(e.status, Some(401));
    assert_eq!(e.exit(), Exit::SignIn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_refresh_token_is_invalid_grant() {
    let env = Env::new(fast_knobs()).await;
    let e = env
        .refresh(&Secret::new("not-a-refresh-token"), &env.ep.graph_scope())
        .await
        .err()
        .expect("unknown refresh token");
    assert_eq!(
        (e.status, e.error.as_str()),
        (400, "invalid_grant"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automation_identity_signs_in_with_client_credentials_and_manages_apps() {
    let env = Env::new(Knobs::default()).await;
    let (app_id, secret) = env.emu.automation_credentials();
    let t = client_credentials(
        &env.http,
        &env.ep,
        &env.tenant(),
        &app_id,
        &secret,
        &env.ep.graph_scope(),
    )
    .await
    .expect("app-only Graph token");
    assert!(t.refresh_token.is_none());
    let g = Graph::new(env.http.clone(), &env.ep, t.access_token);
    let app = g
        .create_application("Unattended web app")
        .await
        .expect("Application.ReadWrite.All creates apps");
    let pw = g
        .add_password(&app.id, "rotation", one_year())
        .await
        .expect("and adds secrets");
    assert!(!pw.secret.is_empty());

    // The same works against the tenant's domain instead of its ID.
    client_credentials(
        &env.http,
        &env.ep,
        &env.emu.tenant_domain(),
        &app_id,
        &secret,
        &env.ep.graph_scope(),
    )
    .await
    .expect("tenant domain");

    // /me is for users only.
    let e = g.me().await.expect_err("app-only /me");
    assert_eq!(e.status, Some(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_against_organizations_is_refused_before_sending() {
    let env = Env::new(Knobs::default()).await;
    let (app_id, secret) = env.emu.automation_credentials();
    for tenant in ["organizations", "common"] {
        let e = client_credentials(
            &env.http,
            &env.ep,
            tenant,
            &app_id,
            &secret,
            &env.ep.graph_scope(),
        )
        .await
        .expect_err("refused");
        assert_eq!(e.exit(), Exit::Usage);
        assert!(
            e.hint().unwrap_or_default().contains("tenant ID"),
            "{:?}",
            e.hint()
        );
    }
    assert!(env.token_polls().is_empty(), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_with_a_wrong_secret_says_it_does_not_authenticate() {
    let env = Env::new(Knobs::default()).await;
    let (app_id, _) = env.emu.automation_credentials();
    let e = client_credentials(
        &env.http,
        &env.ep,
        &env.tenant(),
        &app_id,
        &Secret::new("wrong~secret"),
        &env.ep.graph_scope(),
    )
    .await
    .expect_err("wrong secret");
    assert!(e.is_invalid_secret(), "{e:?}");
    assert_eq!(e.status, Some(401));
    assert_eq!(e.exit(), Exit::Verify);
    assert!(
        e.hint().unwrap_or_default().contains("not its ID"),
        "{:?}",
        e.hint()
    );
    // A refusal is final: not retried.
    assert_eq!(env.token_polls().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Graph
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_me_and_organization_name_the_user_and_the_partner_tenant() {
    let env = Env::new(fast_knobs()).await;
    let g = env.graph().await;
    let me = g.me().await.expect("me");
    assert_eq!(
        me.user_principal_name,
        env.emu.user_principal_name(UserKind::GlobalAdmin)
    );
    assert!(!me.id.is_empty());
    let org = g.organization().await.expect("organization");
    assert_eq!(org.id, env.tenant());
    assert!(
        org.verified_domains
            .iter()
            .any(|d| d.name == env.emu.tenant_domain()),
        "{org:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_member_of_follows_every_page_and_finds_the_admin_roles() {
    let env = Env::new(Knobs {
        member_of_page_size: 2,
        ..fast_knobs()
    })
    .await;
    let admin = env.graph().await;
    let all = admin.member_of().await.expect("memberOf");
    let pages = env.log("GET", "/me/transitiveMemberOf").len();
    assert!(pages >= 3, "{pages} pages for {} items", all.len());
    assert_eq!(pages, all.len().div_ceil(2), "one request per page of 2");
    assert!(all.iter().any(|o| o.is_global_admin_role()), "{all:?}");
    assert!(!all.iter().any(|o| o.is_admin_agents_group()));
    let mut ids: Vec<_> = all.iter().map(|o| o.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "no page read twice");

    let agent = env.graph_as(UserKind::AdminAgent).await;
    let all = agent.member_of().await.expect("memberOf");
    assert!(all.iter().any(|o| o.is_admin_agents_group()), "{all:?}");
    assert!(!all.iter().any(|o| o.is_global_admin_role()));

    let plain = env.graph_as(UserKind::Plain).await;
    let all = plain.member_of().await.expect("memberOf");
    assert!(
        !all.iter()
            .any(|o| o.is_admin_agents_group() || o.is_global_admin_role()),
        "{all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_partner_center_service_principal_is_found_in_a_csp_tenant_only() {
    let env = Env::new(fast_knobs()).await;
    let g = env.graph().await;
    let sp = g
        .partner_center_service_principal()
        .await
        .expect("lookup")
        .expect("present in a CSP tenant");
    assert_eq!(sp.app_id, PARTNER_CENTER_APP_ID);

    env.emu.update_knobs(|k| k.not_csp_tenant = true);
    assert_eq!(
        g.partner_center_service_principal().await.expect("lookup"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_creates_the_web_app_as_the_reference_describes_and_finds_it_by_app_id() {
    let env = Env::new(fast_knobs()).await;
    let g = env.graph().await;
    let app = g
        .create_application("Partner Center web app")
        .await
        .expect("create");
    let seen = env
        .emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == app.app_id)
        .expect("the emulator holds the app");
    assert_eq!(seen.object_id, app.id);
    assert_eq!(seen.display_name, "Partner Center web app");
    assert_eq!(seen.sign_in_audience, "AzureADMultipleOrgs");

    let found = g
        .get_application(&app.app_id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(found.id, app.id);
    assert!(found.password_credentials.is_empty());
    assert_eq!(
        g.get_application("00000000-0000-0000-0000-000000000001")
            .await
            .expect("get"),
        None
    );
    let e = g
        .get_application("not-a-guid")
        .await
        .expect_err("refused locally");
    assert_eq!(e.exit(), Exit::Usage);
    assert!(env.log("GET", "not-a-guid").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_service_principal_created_once_and_an_existing_one_is_reused() {
    let env = Env::new(fast_knobs()).await;
    let g = env.graph().await;
    let app = g.create_application("SP app").await.expect("create");
    let sp = g.create_service_principal(&app.app_id).await.expect("sp");
    assert_eq!(sp.app_id, app.app_id);
    let again = g
        .create_service_principal(&app.app_id)
        .await
        .expect("409 is not a failure");
    assert_eq!(again.id, sp.id);
    assert_eq!(
        statuses(&env.log("POST", "/v1.0/servicePrincipals")),
        vec![201, 409]
    );
    assert!(
        env.emu
            .applications()
            .iter()
            .any(|a| a.app_id == app.app_id && a.has_service_principal)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_adds_the_service_principal_to_admin_agents_once() {
    let env = Env::new(fast_knobs()).await;
    let g = env.graph().await;
    let app = g.create_application("Agents app").await.expect("create");
    let sp = g.create_service_principal(&app.app_id).await.expect("sp");
    let group = g
        .find_group(ADMIN_AGENTS_GROUP)
        .await
        .expect("groups")
        .expect("AdminAgents exists");
    assert_eq!(
        g.add_group_member(&group, &sp.id).await.expect("add"),
        Membership::Added
    );
    assert_eq!(
        g.add_group_member(&group, &sp.id).await.expect("add again"),
        Membership::AlreadyMember
    );
    assert!(
        env.emu
            .applications()
            .iter()
            .any(|a| a.app_id == app.app_id && a.in_admin_agents)
    );
    assert_eq!(g.find_group("No Such Group").await.expect("groups"), None);

    // A plain user may not change AdminAgents.
    let plain = env.graph_as(UserKind::Plain).await;
    let e = plain
        .add_group_member(&group, &sp.id)
        .await
        .expect_err("plain user");
    assert_eq!(e.status, Some(403));
    assert_eq!(e.exit(), Exit::Permission);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_add_password_returns_the_secret_once_with_the_requested_end() {
    let env = Env::new(fast_knobs()).await;
    let g = env.graph().await;
    let app = g.create_application("Secret app").await.expect("create");
    let end = OffsetDateTime::now_utc() + time::Duration::days(365);
    let pw = g
        .add_password(&app.id, "csp-onboard 2026", end)
        .await
        .expect("addPassword");
    assert!(pw.secret.expose().len() >= 16);
    assert_eq!(pw.hint.as_deref(), Some(pw.secret.hint().as_str()));
    assert!(
        (pw.end - end).abs() < time::Duration::seconds(2),
        "{:?}",
        pw.end
    );
    let seen = env
        .emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == app.app_id)
        .expect("app");
    assert_eq!(seen.passwords.len(), 1);
    assert_eq!(seen.passwords[0].key_id, pw.key_id);
    assert_eq!(
        seen.passwords[0].display_name.as_deref(),
        Some("csp-onboard 2026")
    );
    assert!((seen.passwords[0].end - end).abs() < time::Duration::seconds(2));

    // Reading the app back shows the key's metadata, never the secret.
    let read = g
        .get_application(&app.app_id)
        .await
        .expect("get")
        .expect("found");
    assert_eq!(read.password_credentials.len(), 1);
    assert_eq!(read.password_credentials[0].key_id, pw.key_id);
    assert!(!format!("{read:?}").contains(pw.secret.expose()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_add_password_beyond_the_lifetime_policy_is_a_policy_error_with_exit_5() {
    let env = Env::new(Knobs {
        max_password_lifetime: Some(Duration::from_secs(180 * 86400)),
        grant_policy_read: true,
        ..fast_knobs()
    })
    .await;
    let g = env.graph().await;
    let policy = g.default_app_management_policy().await.expect("policy");
    assert_eq!(policy.max_password_lifetime_days, Some(180));
    assert!(!policy.passwords_blocked);

    let app = g.create_application("Capped app").await.expect("create");
    let e = g
        .add_password(&app.id, "too long", one_year())
        .await
        .expect_err("beyond the cap");
    assert!(
        e.is_graph_code("CredentialInvalidLifetimeAsPerAppPolicy"),
        "{e:?}"
    );
    assert_eq!(e.exit(), Exit::Policy);
    assert_eq!(e.exit().code(), 5);
    assert_eq!(env.log("POST", "/addPassword").len(), 1, "not retried");

    // The lifetime the policy allows works.
    let within = OffsetDateTime::now_utc() + time::Duration::days(179);
    g.add_password(&app.id, "within", within)
        .await
        .expect("within the cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_add_password_when_passwords_are_disallowed_is_a_policy_error_with_exit_5() {
    let env = Env::new(Knobs {
        passwords_disallowed: true,
        grant_policy_read: true,
        ..fast_knobs()
    })
    .await;
    let g = env.graph().await;
    let policy = g.default_app_management_policy().await.expect("policy");
    assert!(policy.passwords_blocked);
    let app = g
        .create_application("No secrets app")
        .await
        .expect("create");
    let e = g
        .add_password(&app.id, "blocked", one_year())
        .await
        .expect_err("blocked");
    assert!(
        e.is_graph_code("CredentialTypeNotAllowedAsPerAppPolicy"),
        "{e:?}"
    );
    assert_eq!(e.exit(), Exit::Policy);
    assert!(
        e.hint().unwrap_or_default().contains("forbids password"),
        "{:?}",
        e.hint()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_default_policy_without_restrictions_allows_any_lifetime() {
    let env = Env::new(Knobs {
        grant_policy_read: true,
        ..fast_knobs()
    })
    .await;
    let g = env.graph().await;
    let p = g.default_app_management_policy().await.expect("policy");
    assert_eq!(p.max_password_lifetime_days, None);
    assert!(!p.passwords_blocked);
    // A plain user may not read it.
    let plain = env.graph_as(UserKind::Plain).await;
    let e = plain
        .default_app_management_policy()
        .await
        .expect_err("plain user");
    assert_eq!(e.exit(), Exit::Permission);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_remove_password_removes_the_key_and_a_key_already_gone_counts_as_removed() {
    let env = Env::new(fast_knobs()).await;
    let g = env.graph().await;
    let app = g.create_application("Rotate app").await.expect("create");
    let old = g
        .add_password(&app.id, "old", one_year())
        .await
        .expect("old");
    let new = g
        .add_password(&app.id, "new", one_year())
        .await
        .expect("new");
    g.remove_password(&app.id, &old.key_id)
        .await
        .expect("remove");
    let keys = |env: &Env| -> Vec<String> {
        env.emu
            .applications()
            .into_iter()
            .find(|a| a.app_id == app.app_id)
            .map(|a| a.passwords.into_iter().map(|p| p.key_id).collect())
            .unwrap_or_default()
    };
    assert_eq!(keys(&env), vec![new.key_id.clone()]);

    // Removed again (a rerun after a crash): done, not an error.
    g.remove_password(&app.id, &old.key_id)
        .await
        .expect("already gone");
    // Removed in the portal meanwhile: also done.
    assert!(env.emu.portal_remove_password(&app.app_id, &new.key_id));
    g.remove_password(&app.id, &new.key_id)
        .await
        .expect("gone in the portal");
    assert!(keys(&env).is_empty());
    // The unknown-key answers were checked by reading the app again.
    assert!(env.log("GET", &format!("/applications/{}", app.id)).len() >= 2);

    // A key of another app is absent from this one: nothing to do, and the other app keeps it.
    let other = g.create_application("Other app").await.expect("create");
    let kept = g
        .add_password(&other.id, "kept", one_year())
        .await
        .expect("kept");
    let e = g.remove_password(&app.id, &kept.key_id).await;
    assert!(e.is_ok(), "a key absent from the app: {e:?}");
    assert_eq!(
        env.emu
            .applications()
            .into_iter()
            .find(|a| a.app_id == other.app_id)
            .map(|a| a.passwords.len()),
        Some(1)
    );
}

// ---------------------------------------------------------------------------------------------
// Partner Center
// ---------------------------------------------------------------------------------------------

/// A web app made through Graph, with its service principal and a working secret.
async fn web_app(g: &Graph) -> (String, String, Secret) {
    let app = g.create_application("PC app").await.expect("create");
    g.create_service_principal(&app.app_id).await.expect("sp");
    let pw = g
        .add_password(&app.id, "pc", one_year())
        .await
        .expect("secret");
    (app.app_id, app.id, pw.secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_center_app_plus_user_reads_the_organization_profile() {
    let env = Env::new(fast_knobs()).await;
    let token = env.pc_user_token().await;
    let (status, p) = env.pc_get(&token, "v1/profiles/organization").await;
    assert_eq!(status, 200);
    assert_eq!(p["tenantId"], env.tenant().as_str());
    assert!(p["companyName"].is_string());
    let pc = PartnerCenter::new(env.http.clone(), &env.ep, token);
    pc.legal_business_profile().await.expect("legal business");
    pc.legal_business_profile().await.expect("again");
    // Partner Center REST basics: request and correlation IDs are sent, new for every call.
    let log = env.log("GET", "/v1/profiles/legalbusiness");
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|r| r.ms_request_id.is_some()));
    assert!(log[0].ms_correlation_id.is_some());
    assert_ne!(log[0].ms_correlation_id, log[1].ms_correlation_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_center_app_only_passes_the_cheap_checks_but_not_the_organization_profile() {
    let env = Env::new(fast_knobs()).await;
    let g = env.graph().await;
    let (app_id, _, secret) = web_app(&g).await;
    let pc = env.pc_app(&app_id, &secret).await;
    pc.legal_business_profile()
        .await
        .expect("App-only legal business profile");
    let t = client_credentials(
        &env.http,
        &env.ep,
        &env.tenant(),
        &app_id,
        &secret,
        &env.ep.partner_center_scope(),
    )
    .await
    .expect("app-only token");
    let (status, body) = env.pc_get(&t.access_token, "v1/customers?size=1").await;
    assert_eq!(status, 200, "App-only customers");
    assert!(body["totalCount"].is_number());
    let (status, body) = env
        .pc_get(&t.access_token, "v1/profiles/organization")
        .await;
    assert_eq!(
        status, 403,
        "App-only may not read the organization profile"
    );
    assert_eq!(body["code"], 900150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_center_app_plus_user_without_mfa_says_sign_in_again_with_mfa() {
    let env = Env::new(Knobs {
        user_without_mfa: true,
        ..fast_knobs()
    })
    .await;
    let token = env.pc_user_token().await;
    let (status, body) = env.pc_get(&token, "v1/profiles/organization").await;
    assert_eq!((status, body["code"].as_i64()), (401, Some(900421)));
}

// ---------------------------------------------------------------------------------------------
// Throttling, faults, dropped connections
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_throttled_with_retry_after_waits_that_long_and_retries_exactly_once_per_429() {
    let env = Env::new(fast_knobs()).await;
    let g = env.graph().await;
    env.emu.update_knobs(|k| {
        k.throttle = vec![ThrottleRule {
            route: "GET /v1.0/organization".into(),
            first_n: 2,
            every_nth: 0,
            retry_after_secs: 1,
        }]
    });
    let org = g
        .organization()
        .await
        .expect("organization after throttling");
    assert_eq!(org.id, env.tenant());
    let log = env.log("GET", "/v1.0/organization");
    assert_eq!(
        statuses(&log),
        vec![429, 429, 200],
        "throttled + 1, no extra"
    );
    for w in log.windows(2) {
        assert!(
            gap(&w[0], &w[1]) >= Duration::from_secs(1),
            "retried {:?} after a Retry-After of 1 s",
            gap(&w[0], &w[1])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partner_center_throttled_with_retry_after_2_waits_two_seconds_and_keeps_the_request_id() {
    let env = Env::new(fast_knobs()).await;
    let pc = env.pc_user().await;
    env.emu.update_knobs(|k| {
        k.throttle = vec![ThrottleRule {
            route: "GET /v1/profiles/legalbusiness".into(),
            first_n: 1,
            every_nth: 0,
            retry_after_secs: 2,
        }]
    });
    pc.legal_business_profile().await.expect("after throttling");
    let log = env.log("GET", "/v1/profiles/legalbusiness");
    assert_eq!(statuses(&log), vec![429, 200]);
    assert!(
        gap(&log[0], &log[1]) >= Duration::from_secs(2),
        "{:?}",
        gap(&log[0], &log[1])
    );
    assert!(log[0].ms_request_id.is_some());
    assert_eq!(
        log[0].ms_request_id, log[1].ms_request_id,
        "a retry reuses MS-RequestId"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_password_throttled_with_retry_after_is_retried_and_creates_one_secret() {
    let env = Env::new(fast_knobs()).await;
    let g = env.graph().await;
    let app = g.create_application("Throttled").await.expect("create");
    env.emu.update_knobs(|k| {
        k.throttle = vec![ThrottleRule {
            route: "/addPassword".into(),
            first_n: 1,
            every_nth: 0,
            retry_after_secs: 1,
        }]
    });
    g.add_password(&app.id, "after 429", one_year())
        .await
        .expect("a 429 means it was not done: safe to repeat");
    let log = env.log("POST", "/addPassword");
    assert_eq!(statuses(&log), vec![429, 200]);
    assert!(gap(&log[0], &log[1]) >= Duration::from_secs(1));
    let n = env
        .emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == app.app_id)
        .map(|a| a.passwords.len());
    assert_eq!(n, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_throttled_with_retry_after_is_retried_after_that_long() {
    let env = Env::new(Knobs {
        throttle: vec![ThrottleRule {
            route: "/oauth2/v2.0/token".into(),
            first_n: 1,
            every_nth: 0,
            retry_after_secs: 1,
        }],
        ..Default::default()
    })
    .await;
    let (app_id, secret) = env.emu.automation_credentials();
    client_credentials(
        &env.http,
        &env.ep,
        &env.tenant(),
        &app_id,
        &secret,
        &env.ep.graph_scope(),
    )
    .await
    .expect("token after throttling");
    let log = env.token_polls();
    assert_eq!(statuses(&log), vec![429, 200]);
    assert!(
        gap(&log[0], &log[1]) >= Duration::from_secs(1),
        "{:?}",
        gap(&log[0], &log[1])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_that_never_ends_gives_up_after_the_attempts_with_exit_9() {
    let env = Env::new(fast_knobs()).await;
    let g = env.graph().await;
    env.emu.update_knobs(|k| {
        k.throttle = vec![ThrottleRule {
            route: "GET /v1.0/me".into(),
            first_n: 100,
            every_nth: 0,
            retry_after_secs: 0,
        }]
    });
    let e = g.me().await.expect_err("throttled every time");
    assert_eq!(e.status, Some(429));
    assert_eq!(e.exit(), Exit::Unreachable);
    assert_eq!(
        env.log("GET", "/v1.0/me").len(),
        policy().max_attempts as usize
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_get_after_server_errors_is_retried_until_it_succeeds() {
    let env = Env::new(fast_knobs()).await;
    let g = env.graph().await;
    env.emu.update_knobs(|k| {
        k.faults = vec![
            FaultRule {
                route: "GET /v1.0/organization".into(),
                first_n: 1,
                kind: FaultKind::Status(503),
            },
            FaultRule {
                route: "GET /v1.0/me?".into(),
                first_n: 2,
                kind: FaultKind::Status(500),
            },
        ]
    });
    g.organization().await.expect("organization after a 503");
    g.me().await.expect("me after two 500s");
    assert_eq!(
        statuses(&env.log("GET", "/v1.0/organization")),
        vec![503, 200]
    );
    assert_eq!(statuses(&env.log("GET", "/v1.0/me?")), vec![500, 500, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_get_after_a_dropped_connection_is_retried() {
    let env = Env::new(fast_knobs()).await;
    let g = env.graph().await;
    env.emu.update_knobs(|k| {
        k.faults = vec![FaultRule {
            route: "GET /v1.0/organization".into(),
            first_n: 1,
            kind: FaultKind::DropConnection,
        }]
    });
    g.organization().await.expect("organization after a drop");
    let log = env.log("GET", "/v1.0/organization");
    assert_eq!(log.len(), 2);
    assert!(!log[0].delivered);
    assert_eq!(log[1].status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_password_is_not_retried_after_a_dropped_connection() {
    let env = Env::new(fast_knobs()).await;
    let g = env.graph().await;
    let app = g.create_application("Dropped").await.expect("create");
    env.emu.update_knobs(|k| {
        k.faults = vec![FaultRule {
            route: "/addPassword".into(),
            first_n: 1,
            kind: FaultKind::DropConnection,
        }]
    });
    let e = g
        .add_password(&app.id, "maybe", one_year())
        .await
        .expect_err("the answer was lost");
    assert_eq!(
        env.count("POST", "/addPassword"),
        1,
        "never retried blindly"
    );
    assert_eq!(e.exit(), Exit::Unreachable);
}

/// The worst case of §3 "never retry it blindly": Graph applied addPassword but the answer never
/// came. The client must give up without a second addPassword; the key it never saw is left for the
/// rotation engine to find by its display name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_password_applied_but_never_answered_times_out_without_a_second_secret() {
    let env = Env::new(fast_knobs()).await;
    let g = env.graph().await;
    let app = g.create_application("Hung").await.expect("create");
    let next = env.emu.requests().len() as u64 + 1;
    env.emu.update_knobs(|k| k.hang_after_request = Some(next));
    let e = g
        .add_password(&app.id, "hung", one_year())
        .await
        .expect_err("no answer");
    assert_eq!(e.exit(), Exit::Unreachable);
    assert_eq!(
        env.count("POST", "/addPassword"),
        1,
        "never retried blindly"
    );
    let seen = env
        .emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == app.app_id)
        .expect("app");
    assert_eq!(seen.passwords.len(), 1, "applied once");
    assert_eq!(seen.passwords[0].display_name.as_deref(), Some("hung"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_password_is_not_retried_after_a_server_error() {
    let env = Env::new(fast_knobs()).await;
    let g = env.graph().await;
    let app = g.create_application("500").await.expect("create");
    env.emu.update_knobs(|k| {
        k.faults = vec![FaultRule {
            route: "/addPassword".into(),
            first_n: 1,
            kind: FaultKind::Status(500),
        }]
    });
    let e = g
        .add_password(&app.id, "maybe", one_year())
        .await
        .expect_err("500");
    assert_eq!(e.status, Some(500));
    assert_eq!(env.count("POST", "/addPassword"), 1);
}

impl Env {
    fn count(&self, method: &str, path_contains: &str) -> usize {
        self.emu.count(method, path_contains)
    }
}

// ---------------------------------------------------------------------------------------------
// Replication and secret propagation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_app_is_ridden_out_through_replication_for_its_sp_and_admin_agents() {
    let env = Env::new(Knobs {
        replication_delay: Duration::from_millis(1500),
        ..fast_knobs()
    })
    .await;
    let g = env.graph().await;
    let app = g.create_application("Replicating").await.expect("create");
    let sp = g
        .create_service_principal(&app.app_id)
        .await
        .expect("sp once the app replicated");
    let group = g
        .find_group(ADMIN_AGENTS_GROUP)
        .await
        .expect("groups")
        .expect("AdminAgents");
    assert_eq!(
        g.add_group_member(&group, &sp.id)
            .await
            .expect("add once the SP replicated"),
        Membership::Added
    );

    let creates = statuses(&env.log("POST", "/v1.0/servicePrincipals"));
    assert_eq!(creates.last(), Some(&201), "{creates:?}");
    assert_eq!(
        creates.iter().filter(|s| **s == 201).count(),
        1,
        "{creates:?}"
    );
    let adds = statuses(&env.log("POST", "/members/$ref"));
    assert!(adds.len() >= 2 && adds[0] == 404, "{adds:?}");
    assert_eq!(adds.last(), Some(&204), "{adds:?}");
    assert!(
        env.emu
            .applications()
            .iter()
            .any(|a| a.app_id == app.app_id && a.in_admin_agents)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_principal_create_straight_after_the_app_rides_out_replication() {
    let env = Env::new(Knobs {
        replication_delay: Duration::from_millis(1500),
        ..fast_knobs()
    })
    .await;
    let g = env.graph().await;
    let app = g.create_application("SP first").await.expect("create");
    g.create_service_principal(&app.app_id)
        .await
        .expect("sp after replication");
    let creates = statuses(&env.log("POST", "/v1.0/servicePrincipals"));
    assert!(creates.len() >= 2 && creates[0] == 400, "{creates:?}");
    assert_eq!(creates.last(), Some(&201));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_password_straight_after_creating_the_app_rides_out_replication_and_adds_one_secret() {
    let env = Env::new(Knobs {
        replication_delay: Duration::from_millis(1500),
        ..fast_knobs()
    })
    .await;
    let g = env.graph().await;
    let app = g.create_application("Secret first").await.expect("create");
    g.add_password(&app.id, "first", one_year())
        .await
        .expect("a 404 from a lagging replica means it was not done: retried");
    let adds = statuses(&env.log("POST", "/addPassword"));
    assert!(adds.len() >= 2 && adds[0] == 404, "{adds:?}");
    assert_eq!(adds.iter().filter(|s| **s == 200).count(), 1, "{adds:?}");
    let n = env
        .emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == app.app_id)
        .map(|a| a.passwords.len());
    assert_eq!(n, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_secret_is_verified_once_it_has_propagated() {
    let env = Env::new(Knobs {
        secret_propagation_delay: Duration::from_secs(2),
        ..fast_knobs()
    })
    .await;
    let g = env.graph().await;
    let (app_id, _, secret) = web_app(&g).await;
    let mut events = Vec::new();
    let took = verify_secret(
        &env.http,
        &env.ep,
        &env.tenant(),
        &app_id,
        &secret,
        &verify_opts(Duration::from_secs(15)),
        |e| events.push(e),
    )
    .await
    .expect("verified");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, VerifyEvent::Propagating { .. })),
        "{events:?}"
    );
    let tokens = statuses(&env.token_polls());
    assert!(tokens.contains(&401), "early attempts refused: {tokens:?}");
    assert_eq!(&tokens[tokens.len() - 3..], &[200, 200, 200], "{tokens:?}");
    assert_eq!(
        statuses(&env.log("GET", "/v1/profiles/legalbusiness")),
        vec![200],
        "Partner Center is asked once, with the first token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usable_secret_is_verified_with_three_tokens_and_one_partner_center_call() {
    let env = Env::new(Knobs::default()).await;
    let (app_id, _, secret) = env.emu.portal_create_app("Portal app");
    verify_secret(
        &env.http,
        &env.ep,
        &env.tenant(),
        &app_id,
        &secret,
        &verify_opts(Duration::from_secs(5)),
        |_| {},
    )
    .await
    .expect("verified");
    let calls: Vec<String> = env
        .emu
        .requests()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let tokens = calls.iter().filter(|c| c.contains("/token")).count();
    let pc = calls
        .iter()
        .filter(|c| c.contains("/v1/profiles/legalbusiness"))
        .count();
    assert_eq!((tokens, pc, calls.len()), (3, 1, 4), "{calls:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_secret_is_verified_only_after_three_successes_in_a_row() {
    let env = Env::new(Knobs {
        propagation_flaps: 2,
        ..fast_knobs()
    })
    .await;
    let g = env.graph().await;
    let (app_id, _, secret) = web_app(&g).await;
    let before = env.token_polls().len();
    let mut events = Vec::new();
    verify_secret(
        &env.http,
        &env.ep,
        &env.tenant(),
        &app_id,
        &secret,
        &verify_opts(Duration::from_secs(15)),
        |e| events.push(e),
    )
    .await
    .expect("verified");
    let counts: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            VerifyEvent::Confirmed { count, .. } => Some(*count),
            _ => None,
        })
        .collect();
    assert_eq!(counts, vec![1, 1, 1, 2, 3], "a failure resets the count");
    let tokens = statuses(&env.token_polls()[before..]);
    assert_eq!(tokens, vec![200, 401, 200, 401, 200, 200, 200]);
    assert_eq!(
        statuses(&env.log("GET", "/v1/profiles/legalbusiness")),
        vec![200],
        "flapping is on the token side: Partner Center is not asked again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_not_registered_in_partner_center_is_reported_with_the_app_management_step() {
    let env = Env::new(Knobs {
        require_pc_app_registration: true,
        ..fast_knobs()
    })
    .await;
    let g = env.graph().await;
    let (app_id, _, secret) = web_app(&g).await;
    let opts = verify_opts(Duration::from_secs(5));
    let e = verify_secret(
        &env.http,
        &env.ep,
        &env.tenant(),
        &app_id,
        &secret,
        &opts,
        |_| {},
    )
    .await
    .expect_err("not registered");
    let VerifyError::NotRegisteredInPartnerCenter { last } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(last.partner_center_code, Some(800001));
    let u = e.to_user_error();
    assert_eq!(u.exit, Exit::Verify);
    assert!(
        u.hint.unwrap_or_default().contains("Register existing app"),
        "{e}"
    );
    // Registering it in App management is the fix.
    env.emu.register_app_in_partner_center(&app_id);
    verify_secret(
        &env.http,
        &env.ep,
        &env.tenant(),
        &app_id,
        &secret,
        &opts,
        |_| {},
    )
    .await
    .expect("verified after registration");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_secret_is_reported_as_expired() {
    let env = Env::new(Knobs::default()).await;
    let (app_id, _, secret) = env.emu.portal_create_app("Portal app");
    let key = env
        .emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == app_id)
        .and_then(|a| a.passwords.first().map(|p| p.key_id.clone()))
        .expect("the portal key");
    // Made a day ago, long past propagation: AADSTS7000222 is final for it.
    let opts = VerifyOptions {
        key_is_new: false,
        ..verify_opts(Duration::from_secs(5))
    };
    verify_secret(
        &env.http,
        &env.ep,
        &env.tenant(),
        &app_id,
        &secret,
        &opts,
        |_| {},
    )
    .await
    .expect("a portal app and key verify");
    assert!(env.emu.portal_set_password_end(
        &app_id,
        &key,
        OffsetDateTime::now_utc() - time::Duration::days(1)
    ));
    let n = env.token_polls().len();
    let e = verify_secret(
        &env.http,
        &env.ep,
        &env.tenant(),
        &app_id,
        &secret,
        &opts,
        |_| {},
    )
    .await
    .expect_err("expired");
    assert!(matches!(e, VerifyError::Expired(_)), "{e:?}");
    assert_eq!(e.to_user_error().exit, Exit::Verify);
    assert_eq!(env.token_polls().len(), n + 1, "expiry is final: no retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_never_propagated_once_the_budget_is_spent() {
    let env = Env::new(Knobs::default()).await;
    let (app_id, _, _) = env.emu.portal_create_app("Portal app");
    let opts = verify_opts(Duration::from_millis(800));
    let e = verify_secret(
        &env.http,
        &env.ep,
        &env.tenant(),
        &app_id,
        &Secret::new("Qz8Q~this-is-not-the-secret"),
        &opts,
        |_| {},
    )
    .await
    .expect_err("never authenticates");
    let VerifyError::NeverPropagated { elapsed, last } = &e else {
        panic!("{e:?}");
    };
    assert!(*elapsed >= opts.budget, "{elapsed:?}");
    assert!(last.is_invalid_secret());
    assert!(env.token_polls().len() >= 2, "retried within the budget");
    let u = e.to_user_error();
    assert_eq!(u.exit, Exit::Verify);
    assert!(u.hint.unwrap_or_default().contains("not its ID"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_straight_after_creating_the_app_rides_out_aadsts700016() {
    let env = Env::new(Knobs {
        replication_delay: Duration::from_millis(1500),
        ..fast_knobs()
    })
    .await;
    let g = env.graph().await;
    let (app_id, _, secret) = web_app(&g).await;
    let before = env.token_polls().len();
    verify_secret(
        &env.http,
        &env.ep,
        &env.tenant(),
        &app_id,
        &secret,
        &verify_opts(Duration::from_secs(15)),
        |_| {},
    )
    .await
    .expect("verified once the app replicated");
    let tokens = statuses(&env.token_polls()[before..]);
    assert_eq!(
        tokens.first(),
        Some(&400),
        "AADSTS700016 while replicating: {tokens:?}"
    );
    assert_eq!(&tokens[tokens.len() - 3..], &[200, 200, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_of_throttled_on_a_later_page_retries_that_page_only() {
    let env = Env::new(Knobs {
        member_of_page_size: 2,
        ..fast_knobs()
    })
    .await;
    let g = env.graph().await;
    let all = g.member_of().await.expect("memberOf");
    env.emu.update_knobs(|k| {
        k.throttle = vec![ThrottleRule {
            route: "skiptoken".into(), // pages after the first
            first_n: 1,
            every_nth: 0,
            retry_after_secs: 1,
        }]
    });
    let before = env.log("GET", "/me/transitiveMemberOf").len();
    let again = g.member_of().await.expect("memberOf with a throttled page");
    assert_eq!(again, all, "same items, none twice");
    let log = env.log("GET", "/me/transitiveMemberOf");
    let log = &log[before..];
    assert_eq!(log.len(), all.len().div_ceil(2) + 1, "{:?}", statuses(log));
    assert_eq!(log[1].status, 429);
    assert_eq!(log[1].path, log[2].path, "the same page again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_graph_token_asks_the_user_to_sign_in_again() {
    let env = Env::new(Knobs {
        access_token_lifetime: Some(Duration::ZERO),
        ..fast_knobs()
    })
    .await;
    let g = env.graph().await;
    let e = g.me().await.expect_err("expired token");
    assert_eq!(e.status, Some(401));
    assert!(e.is_graph_code("InvalidAuthenticationToken"), "{e:?}");
    assert_eq!(e.exit(), Exit::SignIn);
    assert!(
        e.hint().unwrap_or_default().contains("sign in again"),
        "{:?}",
        e.hint()
    );
    assert_eq!(
        env.log("GET", "/v1.0/me?").len(),
        1,
        "a refusal is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_the_retired_azure_ad_graph_audience_is_refused_by_partner_center() {
    let env = Env::new(fast_knobs()).await;
    let t = env.sign_in().await;
    let rt = t.refresh_token.expect("refresh token");
    let old = env
        .refresh(&rt, "https://graph.windows.net/.default")
        .await
        .expect("an Azure AD Graph token");
    let e = PartnerCenter::new(env.http.clone(), &env.ep, old.access_token)
        .legal_business_profile()
        .await
        .expect_err("retired audience");
    assert_eq!(e.partner_center_code, Some(900420));
    assert_eq!(e.exit(), Exit::SignIn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_redirect_with_another_state_is_refused_and_no_code_is_redeemed() {
    let env = Env::new(Knobs::default()).await;
    let mut page = None;
    let e = browser_sign_in(
        &env.http,
        &env.ep,
        &env.client(),
        &graph_sign_in_scopes(&env.ep),
        |url| {
            // A stale tab or a forged link: same request, another state.
            let mut forged = url::Url::parse(url).expect("authorize URL");
            let pairs: Vec<(String, String)> = forged
                .query_pairs()
                .into_owned()
                .map(|(k, v)| {
                    if k == "state" {
                        (k, "forged".into())
                    } else {
                        (k, v)
                    }
                })
                .collect();
            forged.query_pairs_mut().clear().extend_pairs(pairs);
            page = Some(play_browser(forged.as_str()));
            true
        },
        |_| {},
    )
    .await
    .expect_err("state mismatch");
    assert_eq!(e.exit(), Exit::SignIn);
    assert!(shown(&e).contains("state"), "{}", shown(&e));
    let (_, html) = page
        .expect("opened")
        .await
        .expect("browser task")
        .expect("the browser reached the loopback page");
    assert!(html.contains("did not complete"), "{html}");
    assert!(env.token_polls().is_empty(), "the code was not redeemed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_sign_in_against_the_tenant_domain_works() {
    let env = Env::new(fast_knobs()).await;
    let client = SignInClient {
        client_id: DEFAULT_PUBLIC_CLIENT_ID.to_string(),
        tenant: env.emu.tenant_domain(),
    };
    let dc = device_code_start(&env.http, &env.ep, &client, &graph_sign_in_scopes(&env.ep))
        .await
        .expect("device code");
    let t = device_code_poll(&env.http, &env.ep, &client, &dc, |_| {})
        .await
        .expect("signed in");
    let org = Graph::new(env.http.clone(), &env.ep, t.access_token)
        .organization()
        .await
        .expect("organization");
    assert_eq!(org.id, env.tenant());
    assert!(
        env.token_polls().iter().all(|r| r
            .path
            .starts_with(&format!("/{}/", env.emu.tenant_domain()))),
        "polled the same tenant it started with"
    );
}

// ---------------------------------------------------------------------------------------------
// Redaction
// ---------------------------------------------------------------------------------------------

/// A whole onboarding and rotation, plus the failures a user may meet, then a search of every
/// Debug and Display text the client produced for the secrets and tokens it handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_appears_in_anything_the_client_returns() {
    let env = Env::new(Knobs {
        propagation_flaps: 1,
        ..fast_knobs()
    })
    .await;
    let mut texts: Vec<String> = Vec::new();
    let mut secrets: Vec<String> = Vec::new();

    let dc = device_code_start(
        &env.http,
        &env.ep,
        &env.client(),
        &graph_sign_in_scopes(&env.ep),
    )
    .await
    .expect("device code");
    texts.push(format!("{dc:?}"));
    let t = device_code_poll(&env.http, &env.ep, &env.client(), &dc, |e| {
        texts.push(format!("{e:?}"))
    })
    .await
    .expect("signed in");
    texts.push(format!("{t:?}"));
    secrets.push(t.access_token.expose().to_string());
    let rt = t.refresh_token.clone().expect("refresh token");
    secrets.push(rt.expose().to_string());

    let pc_t = env
        .refresh(&rt, &pc_user_scope(&env.ep))
        .await
        .expect("refresh");
    secrets.push(pc_t.access_token.expose().to_string());
    if let Some(r) = &pc_t.refresh_token {
        secrets.push(r.expose().to_string());
    }
    let pc = PartnerCenter::new(env.http.clone(), &env.ep, pc_t.access_token.clone());
    texts.push(format!("{pc:?}"));
    pc.legal_business_profile().await.expect("legal business");

    let g = Graph::new(env.http.clone(), &env.ep, t.access_token.clone());
    texts.push(format!("{g:?}"));
    texts.push(format!("{:?}", g.me().await.expect("me")));
    texts.push(format!("{:?}", g.organization().await.expect("org")));
    let app = g.create_application("Redaction app").await.expect("create");
    texts.push(format!("{app:?}"));
    let sp = g.create_service_principal(&app.app_id).await.expect("sp");
    texts.push(format!("{sp:?}"));
    let old = g
        .add_password(&app.id, "old", one_year())
        .await
        .expect("old");
    let new = g
        .add_password(&app.id, "new", one_year())
        .await
        .expect("new");
    for pw in [&old, &new] {
        texts.push(format!("{pw:?}"));
        secrets.push(pw.secret.expose().to_string());
    }
    let mut events = Vec::new();
    let took = verify_secret(
        &env.http,
        &env.ep,
        &env.tenant(),
        &app.app_id,
        &new.secret,
        &verify_opts(Duration::from_secs(10)),
        |e| events.push(e),
    )
    .await
    .expect("verified");
    texts.push(format!("{took:?} {events:?}"));
    g.remove_password(&app.id, &old.key_id)
        .await
        .expect("remove");
    let read = g.get_application(&app.app_id).await.expect("get");
    texts.push(format!("{read:?}"));

    // App-only tokens.
    let app_t = client_credentials(
        &env.http,
        &env.ep,
        &env.tenant(),
        &app.app_id,
        &new.secret,
        &env.ep.partner_center_scope(),
    )
    .await
    .expect("app-only");
    texts.push(format!("{app_t:?}"));
    secrets.push(app_t.access_token.expose().to_string());
    let (auto_id, auto_secret) = env.emu.automation_credentials();
    secrets.push(auto_secret.expose().to_string());

    // Failures carrying the same secrets.
    let errors = vec![
        client_credentials(
            &env.http,
            &env.ep,
            &env.tenant(),
            &app.app_id,
            &old.secret,
            &env.ep.partner_center_scope(),
        )
        .await
        .expect_err("the removed secret"),
        client_credentials(
            &env.http,
            &env.ep,
            "organizations",
            &auto_id,
            &auto_secret,
            &env.ep.graph_scope(),
        )
        .await
        .expect_err("alias"),
        PartnerCenter::new(env.http.clone(), &env.ep, t.access_token.clone())
            .legal_business_profile()
            .await
            .expect_err("Graph token at Partner Center"),
    ];
    for e in &errors {
        texts.push(shown(e));
    }
    let never = verify_secret(
        &env.http,
        &env.ep,
        &env.tenant(),
        &app.app_id,
        &old.secret,
        &verify_opts(Duration::from_millis(300)),
        |_| {},
    )
    .await
    .expect_err("removed secret");
    texts.push(format!("{never}\n{never:?}\n{:?}", never.to_user_error()));

    let all = texts.join("\n");
    assert!(all.len() > 1000, "the texts were collected");
    for s in &secrets {
        assert!(s.len() >= 16, "a real secret or token");
        assert!(
            !all.contains(s.as_str()),
            "a secret or token leaked into:\n{all}"
        );
        // Not even a long fragment of one.
        let fragment = &s[s.len() / 2..s.len() / 2 + 12];
        assert!(!all.contains(fragment), "a fragment leaked");
    }
}
