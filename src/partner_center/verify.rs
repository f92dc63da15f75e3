//! Proving a secret works (microsoft-apis.md §5 step 3): app-only tokens, retried through Entra's
//! propagation delay and confirmed several times in a row, and one App-only Partner Center call.

use super::api::PartnerCenter;
use super::auth::client_credentials;
use super::errors::{ApiError, Service};
use super::http::{HttpClient, WaitNotice, WaitReason};
use crate::cloud::Endpoints;
use crate::exit::{Exit, UserError};
use crate::secret::Secret;
use std::time::{Duration, Instant};

/// Where an admin registers an existing Entra app with Partner Center.
pub const APP_MANAGEMENT_URL: &str =
    "https://partner.microsoft.com/pcv/apiintegration/appmanagement";
/// Partner Center's "token audience retired" code: a token problem, not a registration one.
const RETIRED_AUDIENCE: i64 = 900420;

#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Give up after this long without the confirmations.
    pub budget: Duration,
    /// Successes in a row that count as verified (Entra is eventually consistent).
    pub consecutive: u32,
    /// Pause between confirmations. The fast-phase retry interval is twice this (600 ms by default):
    /// short, so that a secret is verified soon after it reaches every replica.
    pub spacing: Duration,
    /// For this long after the start, retry at the fast interval; then back off.
    pub fast_phase: Duration,
    /// Cap of one backoff step after the fast phase.
    pub max_backoff: Duration,
    /// The app was just created: AADSTS700016 (app not found) and AADSTS7000229 (no service
    /// principal in the tenant) are replication lag, not a wrong App ID or tenant. False for an app
    /// made long ago (captured from the portal): there they are final.
    pub app_is_new: bool,
    /// The key was created within the propagation window: AADSTS7000222 ("expired") from a
    /// replica that has not seen it yet is propagation, as Microsoft's public reports describe,
    /// and is retried like AADSTS7000215. For an older key it is final.
    pub key_is_new: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            budget: Duration::from_secs(180),
            consecutive: 3,
            spacing: Duration::from_millis(300),
            fast_phase: Duration::from_secs(30),
            max_backoff: Duration::from_secs(15),
            app_is_new: true,
            key_is_new: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyEvent {
    /// The secret does not authenticate yet; another attempt follows.
    Propagating { attempt: u32, elapsed: Duration },
    /// One more success in a row.
    Confirmed { count: u32, of: u32 },
}

#[derive(Debug)]
pub enum VerifyError {
    /// A failure that waiting will not fix.
    Api(ApiError),
    /// Still AADSTS7000215 (or 70002, or 700016/7000229 for a new app) when the budget ran out.
    NeverPropagated { elapsed: Duration, last: ApiError },
    /// The secret authenticates, but Partner Center refuses the app (401/403 other than 900420).
    /// Partner Center checks the app, not the secret: waiting does not change its answer.
    NotRegisteredInPartnerCenter { last: ApiError },
    /// AADSTS7000222: the secret has expired.
    Expired(ApiError),
}

impl VerifyError {
    pub fn to_user_error(&self) -> UserError {
        match self {
            VerifyError::Api(e) => e.to_user_error(),
            VerifyError::NeverPropagated { elapsed, last } => UserError::new(
                Exit::Verify,
                format!(
                    "the secret still does not authenticate after {} s: {last}",
                    elapsed.as_secs()
                ),
            )
            .hint(
                "a new secret can take a few minutes to reach every Entra replica: run the command again in a few minutes. A secret typed or pasted in must be the secret's value, not its ID (a GUID)",
            ),
            VerifyError::NotRegisteredInPartnerCenter { last } => UserError::new(
                Exit::Verify,
                format!(
                    "the secret authenticates, but Partner Center refuses the app's calls: {last}"
                ),
            )
            .hint(format!(
                "register the App ID under App management, {APP_MANAGEMENT_URL}, with \"Register existing app\", then run the command again"
            )),
            VerifyError::Expired(e) => UserError::new(
                Exit::Verify,
                format!("the secret has expired: {e}"),
            )
            .hint("create a new one with `csp-onboard rotate`"),
        }
    }
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_user_error().message)
    }
}

impl std::error::Error for VerifyError {}

/// The secret has expired: the OAuth error `invalid_client` with AADSTS7000222, as Entra's
/// error-code reference pairs them.
fn expired_secret(e: &ApiError) -> bool {
    e.is_oauth_error("invalid_client") && e.has_aadsts(7000222)
}

/// AADSTS700016 (app not found) or AADSTS7000229 (app has no service principal in the tenant).
fn new_app_not_replicated(e: &ApiError) -> bool {
    e.has_aadsts(700016) || e.has_aadsts(7000229)
}

fn partner_center_refuses(e: &ApiError) -> bool {
    e.service == Service::PartnerCenter
        && matches!(e.status, Some(401 | 403))
        && e.partner_center_code != Some(RETIRED_AUDIENCE)
}

/// Prove that `secret` gets an app-only token for `app_id` in `tenant` `opts.consecutive` times in
/// a row, and that Partner Center accepts such a token. Returns the time it took.
///
/// Entra's eventual consistency is on the token side, so only token requests are repeated. Partner
/// Center is asked once, with the first token that comes back: it checks the app's registration,
/// which does not flap, and one call per verification keeps the overshoot and the load low.
pub async fn verify_secret(
    http: &HttpClient,
    ep: &Endpoints,
    tenant: &str,
    app_id: &str,
    secret: &Secret,
    opts: &VerifyOptions,
    mut on_event: impl FnMut(VerifyEvent),
) -> Result<Duration, VerifyError> {
    let started = Instant::now();
    let fast_interval = opts.spacing * 2;
    let need = opts.consecutive.max(1);
    let mut confirmed = 0;
    let mut partner_center_accepted = false;
    let mut attempts: u32 = 0;
    let mut slow_steps: u32 = 0;
    let scope = ep.partner_center_scope();
    loop {
        attempts += 1;
        // Intervals count from the start of an attempt, so a slow answer does not stretch them.
        let attempt_started = Instant::now();
        let last = match client_credentials(http, ep, tenant, app_id, secret, &scope).await {
            Ok(token) => {
                if !partner_center_accepted {
                    match PartnerCenter::new(http.clone(), ep, token.access_token)
                        .legal_business_profile()
                        .await
                    {
                        Ok(()) => partner_center_accepted = true,
                        Err(e) if partner_center_refuses(&e) => {
                            return Err(VerifyError::NotRegisteredInPartnerCenter { last: e });
                        }
                        Err(e) => return Err(VerifyError::Api(e)),
                    }
                }
                confirmed += 1;
                on_event(VerifyEvent::Confirmed {
                    count: confirmed,
                    of: need,
                });
                if confirmed >= need {
                    return Ok(started.elapsed());
                }
                tokio::time::sleep(opts.spacing.saturating_sub(attempt_started.elapsed())).await;
                continue;
            }
            Err(e) if expired_secret(&e) && !opts.key_is_new => {
                return Err(VerifyError::Expired(e));
            }
            Err(e) if e.is_invalid_secret() || expired_secret(&e) => e,
            // A new app's object or service principal has not reached this replica yet.
            Err(e) if new_app_not_replicated(&e) && opts.app_is_new => e,
            Err(e) => return Err(VerifyError::Api(e)),
        };
        confirmed = 0;
        let elapsed = started.elapsed();
        if elapsed >= opts.budget {
            return Err(VerifyError::NeverPropagated { elapsed, last });
        }
        let step = if elapsed < opts.fast_phase {
            fast_interval
        } else {
            slow_steps += 1;
            fast_interval
                .saturating_mul(1u32 << slow_steps.min(16))
                .min(opts.max_backoff)
        };
        let delay = step
            .saturating_sub(attempt_started.elapsed())
            .min(opts.budget - elapsed);
        on_event(VerifyEvent::Propagating {
            attempt: attempts,
            elapsed,
        });
        http.notify(&WaitNotice {
            reason: WaitReason::Propagation,
            service: Service::Authority,
            delay,
            attempt: attempts + 1,
        });
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::http::fake::{Reply, Seen, serve};
    use super::super::http::test_policy;
    use super::*;
    use crate::cloud::Cloud;

    const TENANT: &str = "8d3c0e7a-1f1b-4a1e-9b53-0c2a5b0f0001";
    const APP: &str = "11111111-2222-3333-4444-555555555555";
    const SECRET: &str = "Vx8Q~secret-under-test";

    fn opts() -> VerifyOptions {
        VerifyOptions {
            budget: Duration::from_millis(400),
            consecutive: 3,
            spacing: Duration::from_millis(5),
            fast_phase: Duration::from_millis(50),
            max_backoff: Duration::from_millis(40),
            app_is_new: true,
            key_is_new: true,
        }
    }

    fn token() -> Reply {
        Reply::json(
            200,
            r#"{"token_type":"Bearer","expires_in":3599,"access_token":"app-only-token"}"#,
        )
    }
    fn invalid_secret() -> Reply {
        Reply::json(
            401,
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}"#,
        )
    }
    fn pc_ok() -> Reply {
        Reply::json(200, "\u{feff}{\"companyName\":\"Contoso\"}")
    }

    async fn run(
        replies: Vec<Reply>,
        opts: VerifyOptions,
    ) -> (Result<Duration, VerifyError>, Vec<VerifyEvent>, Vec<Seen>) {
        let fake = serve(replies).await;
        let ep = Endpoints::from_urls(Cloud::Custom, &fake.base, &fake.base, &fake.base).unwrap();
        let http = HttpClient::new().unwrap().with_policy(test_policy());
        let mut events = Vec::new();
        let r = verify_secret(&http, &ep, TENANT, APP, &Secret::new(SECRET), &opts, |e| {
            events.push(e)
        })
        .await;
        (r, events, fake.requests())
    }

    /// "token" or "partner center", request by request.
    fn kinds(seen: &[Seen]) -> Vec<&'static str> {
        seen.iter()
            .map(|s| {
                if s.target.contains("/oauth2/v2.0/token") {
                    "token"
                } else if s.target.contains("/v1/profiles/legalbusiness") {
                    "partner center"
                } else {
                    "other"
                }
            })
            .collect()
    }

    #[tokio::test]
    async fn a_usable_secret_costs_three_tokens_and_one_partner_center_call() {
        let (r, events, seen) = run(vec![token(), pc_ok(), token(), token()], opts()).await;
        r.unwrap();
        assert_eq!(
            kinds(&seen),
            vec!["token", "partner center", "token", "token"],
            "Partner Center is asked once, with the first token"
        );
        assert_eq!(events.len(), 3, "{events:?}");
    }

    #[tokio::test]
    async fn propagates_then_confirms_three_times() {
        let (r, events, seen) = run(
            vec![
                invalid_secret(),
                invalid_secret(),
                token(),
                pc_ok(),
                token(),
                token(),
            ],
            opts(),
        )
        .await;
        r.unwrap();
        assert_eq!(
            kinds(&seen),
            vec![
                "token",
                "token",
                "token",
                "partner center",
                "token",
                "token"
            ]
        );
        let confirmed: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                VerifyEvent::Confirmed { count, of } => Some((*count, *of)),
                _ => None,
            })
            .collect();
        assert_eq!(confirmed, vec![(1, 3), (2, 3), (3, 3)]);
        assert!(matches!(
            events[0],
            VerifyEvent::Propagating { attempt: 1, .. }
        ));
    }

    #[tokio::test]
    async fn a_failure_between_confirmations_resets_the_count() {
        let (r, events, seen) = run(
            vec![
                token(),
                pc_ok(),
                invalid_secret(),
                token(),
                token(),
                token(),
            ],
            opts(),
        )
        .await;
        r.unwrap();
        assert_eq!(
            kinds(&seen)
                .iter()
                .filter(|k| **k == "partner center")
                .count(),
            1,
            "Partner Center already accepted the app: not asked again"
        );
        let counts: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                VerifyEvent::Confirmed { count, .. } => Some(*count),
                _ => None,
            })
            .collect();
        assert_eq!(counts, vec![1, 1, 2, 3]);
    }

    #[tokio::test]
    async fn gives_up_when_the_budget_runs_out() {
        let (r, events, seen) = run(vec![invalid_secret()], opts()).await;
        let n = seen.len();
        let e = r.unwrap_err();
        let VerifyError::NeverPropagated { elapsed, last } = &e else {
            panic!("{e:?}")
        };
        assert!(*elapsed >= opts().budget);
        assert!(last.has_aadsts(7000215));
        assert!(n >= 5, "retried in the fast phase: {n}");
        assert!(events.len() + 1 >= n);
        let u = e.to_user_error();
        assert_eq!(u.exit, Exit::Verify);
        assert!(u.hint.as_deref().unwrap().contains("value, not its ID"));
        assert!(!format!("{e:?} {u:?}").contains(SECRET));
    }

    #[tokio::test]
    async fn partner_center_refusal_means_register_the_app() {
        let (r, _, seen) = run(
            vec![
                token(),
                Reply::json(
                    401,
                    r#"{"code":800001,"description":"Partner Token missing in request context","data":[],"source":"PartnerFD"}"#,
                ),
            ],
            opts(),
        )
        .await;
        let e = r.unwrap_err();
        assert!(matches!(
            e,
            VerifyError::NotRegisteredInPartnerCenter { .. }
        ));
        assert_eq!(seen.len(), 2, "no waiting: propagation does not explain it");
        let u = e.to_user_error();
        assert_eq!(u.exit, Exit::Verify);
        let hint = u.hint.unwrap();
        assert!(hint.contains(APP_MANAGEMENT_URL) && hint.contains("Register existing app"));
    }

    fn expired() -> Reply {
        Reply::json(
            401,
            r#"{"error":"invalid_client","error_description":"AADSTS7000222: The provided client secret keys are expired.","error_codes":[7000222]}"#,
        )
    }

    #[tokio::test]
    async fn an_expired_secret_is_reported_at_once() {
        let (r, _, seen) = run(
            vec![expired()],
            VerifyOptions {
                key_is_new: false,
                ..opts()
            },
        )
        .await;
        let e = r.unwrap_err();
        assert!(matches!(e, VerifyError::Expired(_)));
        assert_eq!(e.to_user_error().exit, Exit::Verify);
        assert_eq!(seen.len(), 1);
    }

    #[tokio::test]
    async fn expired_right_after_creation_is_propagation() {
        let (r, events, seen) =
            run(vec![expired(), token(), pc_ok(), token(), token()], opts()).await;
        assert!(r.is_ok(), "{r:?}");
        assert!(matches!(events[0], VerifyEvent::Propagating { .. }));
        assert_eq!(seen.len(), 5);
    }

    fn missing_service_principal() -> Reply {
        Reply::json(
            400,
            r#"{"error":"invalid_client","error_description":"AADSTS7000229: The client application 11111111-2222-3333-4444-555555555555 is missing service principal in the tenant 8d3c0e7a-1f1b-4a1e-9b53-0c2a5b0f0001.","error_codes":[7000229]}"#,
        )
    }

    #[tokio::test]
    async fn a_new_apps_missing_service_principal_is_replication_lag() {
        let (r, events, seen) = run(
            vec![
                missing_service_principal(),
                token(),
                pc_ok(),
                token(),
                token(),
            ],
            opts(),
        )
        .await;
        r.unwrap();
        assert_eq!(
            seen.len(),
            5,
            "waited through AADSTS7000229, then confirmed"
        );
        assert!(matches!(
            events[0],
            VerifyEvent::Propagating { attempt: 1, .. }
        ));
    }

    #[tokio::test]
    async fn an_old_apps_missing_service_principal_is_final() {
        let (r, _, seen) = run(
            vec![missing_service_principal()],
            VerifyOptions {
                app_is_new: false,
                ..opts()
            },
        )
        .await;
        let e = r.unwrap_err();
        let VerifyError::Api(api) = &e else {
            panic!("{e:?}")
        };
        assert!(api.has_aadsts(7000229));
        assert_eq!(seen.len(), 1, "no waiting: the app is not new");
        assert!(
            e.to_user_error()
                .hint
                .unwrap()
                .contains("no service principal")
        );
    }

    #[tokio::test]
    async fn a_tenant_alias_is_a_usage_error() {
        let http = HttpClient::new().unwrap().with_policy(test_policy());
        let ep = Endpoints::from_urls(
            Cloud::Custom,
            "http://127.0.0.1:9",
            "http://127.0.0.1:9",
            "http://127.0.0.1:9",
        )
        .unwrap();
        let e = verify_secret(
            &http,
            &ep,
            "organizations",
            APP,
            &Secret::new(SECRET),
            &opts(),
            |_| {},
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_user_error().exit, Exit::Usage);
    }

    #[test]
    fn default_options_match_the_reference() {
        let o = VerifyOptions::default();
        assert_eq!(o.budget, Duration::from_secs(180));
        assert_eq!(o.consecutive, 3);
        assert_eq!(o.spacing, Duration::from_millis(300));
        assert_eq!(
            o.spacing * 2,
            Duration::from_millis(600),
            "fast-phase interval"
        );
    }
}
