//! The emulator over real HTTP, driven by hand-written requests taken from microsoft-apis.md
//! (never the client module): each strictness rule, each knob, and the sign-in flows end to end.

use csp_onboard::emulator::{
    Emulator, EmulatorConfig, FaultKind, FaultRule, Knobs, Service, ThrottleRule, UserKind,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const AZURE_CLI: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";
const PC_APP: &str = "fa3d9a0c-3fb0-42cc-9193-47c7ecd2edbd";
const GRAPH_DEFAULT: &str = "https://graph.microsoft.com/.default offline_access openid profile";
const PC_DEFAULT: &str = "https://api.partnercenter.microsoft.com/.default";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

async fn start(knobs: Knobs) -> Emulator {
    Emulator::start(EmulatorConfig {
        port: 0,
        state_file: None,
        knobs,
    })
    .await
    .expect("emulator starts")
}

/// Fast device-code polling, approved on the first poll.
fn quick() -> Knobs {
    Knobs {
        device_code_interval_secs: Some(0),
        auto_approve_device_code_after_polls: Some(0),
        ..Knobs::default()
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn body(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post_form(url: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
    body(http().post(url).form(pairs).send().await.unwrap()).await
}

fn token_url(emu: &Emulator, tenant: &str) -> String {
    format!("{}/{tenant}/oauth2/v2.0/token", emu.authority_url())
}

fn devicecode_url(emu: &Emulator, tenant: &str) -> String {
    format!("{}/{tenant}/oauth2/v2.0/devicecode", emu.authority_url())
}

/// Assert an Entra error: status, `error`, the AADSTS code, and the §2.5 body shape.
fn assert_aad(got: &(u16, Value), status: u16, error: &str, code: u64) {
    let (s, b) = got;
    assert_eq!((*s, b["error"].as_str()), (status, Some(error)), "{b}");
    assert_eq!(b["error_codes"], json!([code]), "{b}");
    let desc = b["error_description"].as_str().unwrap();
    assert!(desc.starts_with(&format!("AADSTS{code}: ")), "{desc}");
    let trace = b["trace_id"].as_str().unwrap();
    let corr = b["correlation_id"].as_str().unwrap();
    assert!(
        desc.contains(&format!(
            "\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: "
        )),
        "{desc}"
    );
    assert!(
        b["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{b}"
    );
    assert!(
        b["error_uri"]
            .as_str()
            .is_some_and(|u| u.contains(&code.to_string())),
        "{b}"
    );
}

/// Assert a Graph error: status, `code`, and the innerError shape.
fn assert_graph(got: &(u16, Value), status: u16, code: &str) {
    let (s, b) = got;
    assert_eq!(
        (*s, b["error"]["code"].as_str()),
        (status, Some(code)),
        "{b}"
    );
    let inner = &b["error"]["innerError"];
    for k in ["date", "request-id", "client-request-id"] {
        assert!(
            inner[k].as_str().is_some_and(|v| !v.is_empty()),
            "{k} missing in {b}"
        );
    }
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

fn assert_pc(got: &(u16, Value), status: u16, code: i64) {
    let (s, b) = got;
    assert_eq!((*s, b["code"].as_i64()), (status, Some(code)), "{b}");
    assert_eq!(b["source"], "PartnerFD");
    assert_eq!(b["data"], json!([]));
    assert!(b["description"].as_str().is_some());
}

/// Device-code sign-in through the emulator's auto-approval: the token response.
async fn sign_in(emu: &Emulator, scope: &str) -> Value {
    let (s, dc) = post_form(
        &devicecode_url(emu, "organizations"),
        &[("client_id", AZURE_CLI), ("scope", scope)],
    )
    .await;
    assert_eq!(s, 200, "{dc}");
    let device_code = dc["device_code"].as_str().unwrap();
    let (s, t) = post_form(
        &token_url(emu, "organizations"),
        &[
            ("grant_type", DEVICE_GRANT),
            ("client_id", AZURE_CLI),
            ("device_code", device_code),
        ],
    )
    .await;
    assert_eq!(s, 200, "{t}");
    t
}

async fn graph_token(emu: &Emulator) -> String {
    sign_in(emu, GRAPH_DEFAULT).await["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn client_credentials(
    emu: &Emulator,
    app_id: &str,
    secret: &str,
    scope: &str,
) -> (u16, Value) {
    post_form(
        &token_url(emu, &emu.tenant_id()),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", app_id),
            ("client_secret", secret),
            ("scope", scope),
        ],
    )
    .await
}

async fn graph(
    emu: &Emulator,
    method: &str,
    path: &str,
    token: &str,
    json_body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}/v1.0/{path}", emu.graph_url());
    let mut rb = http()
        .request(method.parse().unwrap(), &url)
        .bearer_auth(token)
        .header("client-request-id", "11111111-2222-3333-4444-555555555555");
    if let Some(b) = json_body {
        rb = rb.json(&b);
    }
    body(rb.send().await.unwrap()).await
}

async fn pc(emu: &Emulator, path: &str, token: &str) -> (u16, Value) {
    let url = format!("{}/v1/{path}", emu.partner_center_url());
    body(
        http()
            .get(url)
            .bearer_auth(token)
            .header("Accept", "application/json")
            .header("MS-RequestId", "0a0a0a0a-0000-0000-0000-000000000001")
            .header("MS-CorrelationId", "0c0c0c0c-0000-0000-0000-000000000002")
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn web_app_body(name: &str) -> Value {
    json!({
        "displayName": name,
        "signInAudience": "AzureADMultipleOrgs",
        "web": { "redirectUris": ["http://localhost"] },
        "requiredResourceAccess": [{ "resourceAppId": PC_APP,
            "resourceAccess": [{ "id": "1cebfa2a-fb4d-419e-b5f9-839b4383e05a", "type": "Scope" }] }]
    })
}

/// Create app + service principal + secret as the Global admin: (appId, objectId, secret).
async fn create_app_with_secret(emu: &Emulator, token: &str) -> (String, String, String) {
    let (s, app) = graph(
        emu,
        "POST",
        "applications",
        token,
        Some(web_app_body("Web app")),
    )
    .await;
    assert_eq!(s, 201, "{app}");
    let app_id = app["appId"].as_str().unwrap().to_string();
    let id = app["id"].as_str().unwrap().to_string();
    let (s, sp) = graph(
        emu,
        "POST",
        "servicePrincipals",
        token,
        Some(json!({"appId": app_id})),
    )
    .await;
    assert_eq!(s, 201, "{sp}");
    let (s, pw) = graph(
        emu,
        "POST",
        &format!("applications/{id}/addPassword"),
        token,
        Some(json!({"passwordCredential": {"displayName": "k1", "endDateTime": "2027-06-01T00:00:00Z"}})),
    )
    .await;
    assert_eq!(s, 200, "{pw}");
    (app_id, id, pw["secretText"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn token_endpoint_rejects_what_entra_rejects() {
    let emu = start(quick()).await;
    let url = token_url(&emu, "organizations");
    let tid = emu.tenant_id();

    let discovery_url = |t: &str| {
        format!(
            "{}/{t}/v2.0/.well-known/openid-configuration",
            emu.authority_url()
        )
    };
    let (s, oidc) = body(http().get(discovery_url(&tid)).send().await.unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(oidc["token_endpoint"], token_url(&emu, &tid));
    assert_eq!(
        oidc["device_authorization_endpoint"],
        devicecode_url(&emu, &tid)
    );
    let unknown = body(
        http()
            .get(discovery_url("0e0e0e0e-1111-2222-3333-444444444444"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_aad(&unknown, 400, "invalid_request", 90002);

    let get = body(http().get(&url).send().await.unwrap()).await;
    assert_aad(&get, 400, "invalid_request", 900561);

    // A JSON body is not read at all: Entra asks for the first parameter.
    let as_json = body(
        http()
            .post(&url)
            .json(&json!({"grant_type": "client_credentials"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_aad(&as_json, 400, "invalid_request", 900144);
    assert!(
        as_json.1["error_description"]
            .as_str()
            .unwrap()
            .contains("'grant_type'")
    );

    let no_client = post_form(&url, &[("grant_type", DEVICE_GRANT), ("device_code", "x")]).await;
    assert_aad(&no_client, 400, "invalid_request", 900144);
    assert!(
        no_client.1["error_description"]
            .as_str()
            .unwrap()
            .contains("'client_id'")
    );

    let bad_grant = post_form(
        &url,
        &[("grant_type", "password"), ("client_id", AZURE_CLI)],
    )
    .await;
    assert_aad(&bad_grant, 400, "unsupported_grant_type", 70003);

    let unknown_client = post_form(
        &devicecode_url(&emu, "organizations"),
        &[
            ("client_id", "9a9a9a9a-1111-2222-3333-444444444444"),
            ("scope", GRAPH_DEFAULT),
        ],
    )
    .await;
    assert_aad(&unknown_client, 400, "unauthorized_client", 700016);

    let other_cloud = post_form(
        &devicecode_url(&emu, "organizations"),
        &[
            ("client_id", AZURE_CLI),
            ("scope", "https://graph.microsoft.us/.default"),
        ],
    )
    .await;
    assert_aad(&other_cloud, 400, "invalid_resource", 500011);

    let bad_scope = post_form(
        &devicecode_url(&emu, "organizations"),
        &[
            ("client_id", AZURE_CLI),
            (
                "scope",
                "https://api.partnercenter.microsoft.com/AllTheThings",
            ),
        ],
    )
    .await;
    assert_aad(&bad_scope, 400, "invalid_scope", 70011);

    let unknown_tenant = post_form(
        &token_url(&emu, "0e0e0e0e-1111-2222-3333-444444444444"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", AZURE_CLI),
        ],
    )
    .await;
    assert_aad(&unknown_tenant, 400, "invalid_request", 90002);

    let (app_id, secret) = emu.automation_credentials();
    for tenant in ["organizations", "common"] {
        let r = post_form(
            &token_url(&emu, tenant),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &app_id),
                ("client_secret", secret.expose()),
                ("scope", PC_DEFAULT),
            ],
        )
        .await;
        assert_aad(&r, 400, "invalid_request", 50059);
    }
    let cc_needs_default = client_credentials(
        &emu,
        &app_id,
        secret.expose(),
        "https://api.partnercenter.microsoft.com/user_impersonation",
    )
    .await;
    assert_aad(&cc_needs_default, 400, "invalid_scope", 1002012);

    let public_with_secret = post_form(
        &token_url(&emu, &tid),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", AZURE_CLI),
            ("client_secret", "x"),
            ("scope", PC_DEFAULT),
        ],
    )
    .await;
    assert_aad(&public_with_secret, 401, "invalid_client", 700025);

    let wrong = client_credentials(&emu, &app_id, "abc8Q~not-the-secret", PC_DEFAULT).await;
    assert_aad(&wrong, 401, "invalid_client", 7000215);
    // Users paste the secret's ID instead of its value: same answer.
    let key_id = emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == app_id)
        .unwrap()
        .passwords[0]
        .key_id
        .clone();
    assert_aad(
        &client_credentials(&emu, &app_id, &key_id, PC_DEFAULT).await,
        401,
        "invalid_client",
        7000215,
    );

    let ok = client_credentials(&emu, &app_id, secret.expose(), PC_DEFAULT).await;
    assert_eq!(ok.0, 200, "{}", ok.1);
    assert_eq!(ok.1["token_type"], "Bearer");
    assert!(ok.1["expires_in"].as_i64().unwrap() > 0);
    assert!(ok.1.get("refresh_token").is_none());
    // By domain as well as by GUID.
    let by_domain = post_form(
        &token_url(&emu, &emu.tenant_domain()),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &app_id),
            ("client_secret", secret.expose()),
            ("scope", PC_DEFAULT),
        ],
    )
    .await;
    assert_eq!(by_domain.0, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn device_code_flow_end_to_end() {
    let emu = start(Knobs {
        device_code_interval_secs: Some(1),
        ..Knobs::default()
    })
    .await;
    let (s, dc) = post_form(
        &devicecode_url(&emu, "organizations"),
        &[("client_id", AZURE_CLI), ("scope", GRAPH_DEFAULT)],
    )
    .await;
    assert_eq!(s, 200, "{dc}");
    assert!(
        dc.get("verification_uri_complete").is_none(),
        "Entra sends no verification_uri_complete"
    );
    assert_eq!(dc["expires_in"], 900);
    assert_eq!(dc["interval"], 1);
    let user_code = dc["user_code"].as_str().unwrap();
    let uri = dc["verification_uri"].as_str().unwrap();
    assert!(
        dc["message"].as_str().unwrap().contains(user_code)
            && dc["message"].as_str().unwrap().contains(uri)
    );
    let device_code = dc["device_code"].as_str().unwrap();
    let poll = || {
        post_form_owned(
            token_url(&emu, "organizations"),
            vec![
                ("grant_type", DEVICE_GRANT.to_string()),
                ("client_id", AZURE_CLI.to_string()),
                ("device_code", device_code.to_string()),
            ],
        )
    };

    assert_aad(&poll().await, 400, "authorization_pending", 70016);
    // Polled again at once: faster than the interval.
    let fast = poll().await;
    assert_eq!(fast.1["error"], "slow_down", "{}", fast.1);

    // The user opens the page and approves.
    let page = http().get(uri).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<form") && page.contains("user_code"));
    let approved = http()
        .post(uri)
        .form(&[("user_code", user_code), ("action", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    assert!(
        approved
            .text()
            .await
            .unwrap()
            .contains(&emu.user_principal_name(UserKind::GlobalAdmin))
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, tokens) = poll().await;
    assert_eq!(s, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    for k in ["access_token", "refresh_token", "id_token", "scope"] {
        assert!(tokens[k].as_str().is_some_and(|v| !v.is_empty()), "{k}");
    }
    // A device code is good for one sign-in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(poll().await.1["error"], "bad_verification_code");
    let unknown = post_form(
        &token_url(&emu, "organizations"),
        &[
            ("grant_type", DEVICE_GRANT),
            ("client_id", AZURE_CLI),
            ("device_code", "nope"),
        ],
    )
    .await;
    assert_eq!(unknown.1["error"], "bad_verification_code");

    // One refresh token serves Partner Center too (§2.3).
    let rt = tokens["refresh_token"].as_str().unwrap();
    let (s, pc_tokens) = post_form(
        &token_url(&emu, "organizations"),
        &[
            ("grant_type", "refresh_token"),
            ("client_id", AZURE_CLI),
            ("refresh_token", rt),
            (
                "scope",
                "https://api.partnercenter.microsoft.com/user_impersonation offline_access",
            ),
        ],
    )
    .await;
    assert_eq!(s, 200, "{pc_tokens}");
    let pc_token = pc_tokens["access_token"].as_str().unwrap();
    let (s, org) = pc(&emu, "profiles/organization", pc_token).await;
    assert_eq!(s, 200, "{org}");
    assert_eq!(org["profileType"], "OrganizationProfile");
    assert_eq!(org["tenantId"], emu.tenant_id());
    let bad_rt = post_form(
        &token_url(&emu, "organizations"),
        &[
            ("grant_type", "refresh_token"),
            ("client_id", AZURE_CLI),
            ("refresh_token", "x"),
            ("scope", PC_DEFAULT),
        ],
    )
    .await;
    assert_eq!(bad_rt.1["error"], "invalid_grant");
    emu.shutdown().await;
}

async fn post_form_owned(url: String, pairs: Vec<(&'static str, String)>) -> (u16, Value) {
    body(http().post(url).form(&pairs).send().await.unwrap()).await
}

#[tokio::test]
async fn device_code_declined_expired_and_blocked() {
    let emu = start(Knobs {
        device_code_interval_secs: Some(0),
        ..Knobs::default()
    })
    .await;
    let start_flow = || async {
        let (_, dc) = post_form(
            &devicecode_url(&emu, "organizations"),
            &[("client_id", AZURE_CLI), ("scope", GRAPH_DEFAULT)],
        )
        .await;
        (
            dc["device_code"].as_str().unwrap().to_string(),
            dc["user_code"].as_str().unwrap().to_string(),
        )
    };
    let redeem = |code: String| {
        post_form_owned(
            token_url(&emu, "organizations"),
            vec![
                ("grant_type", DEVICE_GRANT.to_string()),
                ("client_id", AZURE_CLI.to_string()),
                ("device_code", code),
            ],
        )
    };

    let (code, user_code) = start_flow().await;
    assert_eq!(emu.pending_user_codes(), vec![user_code.clone()]);
    let declined = http()
        .post(emu.device_login_url())
        .form(&[("user_code", user_code.as_str()), ("action", "decline")])
        .send()
        .await
        .unwrap();
    assert_eq!(declined.status(), 200);
    assert_eq!(redeem(code).await.1["error"], "authorization_declined");

    emu.update_knobs(|k| k.block_device_code = true);
    let (code, user_code) = start_flow().await;
    assert!(emu.approve_device_code(&user_code));
    assert_aad(&redeem(code).await, 400, "invalid_grant", 53003);

    emu.update_knobs(|k| k.device_code_lifetime = Some(Duration::ZERO));
    let (code, user_code) = start_flow().await;
    assert!(
        !emu.approve_device_code(&user_code),
        "an expired code cannot be approved"
    );
    assert_eq!(redeem(code).await.1["error"], "expired_token");
    emu.shutdown().await;
}

fn pkce_pair() -> (String, String) {
    use base64::Engine;
    use sha2::Digest;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".to_string();
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

#[tokio::test]
async fn authorization_code_with_pkce_end_to_end() {
    let emu = start(Knobs::default()).await;
    let (verifier, challenge) = pkce_pair();
    let redirect = "http://localhost:53123";
    let authorize = |extra: Vec<(&'static str, &str)>| {
        let mut q: Vec<(&str, &str)> = vec![
            ("client_id", AZURE_CLI),
            ("response_type", "code"),
            ("redirect_uri", redirect),
            ("response_mode", "query"),
            ("scope", GRAPH_DEFAULT),
            ("state", "st-42"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        for (k, v) in extra {
            q.retain(|(n, _)| *n != k);
            q.push((k, v));
        }
        http()
            .get(format!(
                "{}/organizations/oauth2/v2.0/authorize",
                emu.authority_url()
            ))
            .query(&q)
            .send()
    };
    let location =
        |r: &reqwest::Response| url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let param = |u: &url::Url, k: &str| {
        u.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
    };

    let r = authorize(vec![]).await.unwrap();
    assert_eq!(r.status(), 302);
    let back = location(&r);
    assert_eq!(back.origin().ascii_serialization(), redirect);
    assert_eq!(param(&back, "state").as_deref(), Some("st-42"));
    let code = param(&back, "code").unwrap();

    let redeem = |code: String, verifier: String, redirect: &'static str| {
        post_form_owned(
            token_url(&emu, "organizations"),
            vec![
                ("grant_type", "authorization_code".to_string()),
                ("client_id", AZURE_CLI.to_string()),
                ("code", code),
                ("redirect_uri", redirect.to_string()),
                ("code_verifier", verifier),
                ("scope", GRAPH_DEFAULT.to_string()),
            ],
        )
    };
    assert_aad(
        &redeem(
            code.clone(),
            "wrong-verifier".into(),
            "http://localhost:53123",
        )
        .await,
        400,
        "invalid_grant",
        501481,
    );
    assert_aad(
        &redeem(code.clone(), verifier.clone(), "http://localhost:9").await,
        400,
        "invalid_grant",
        500112,
    );
    let (s, tokens) = redeem(code.clone(), verifier.clone(), "http://localhost:53123").await;
    assert_eq!(s, 200, "{tokens}");
    let me = graph(
        &emu,
        "GET",
        "me?$select=id,userPrincipalName,displayName",
        tokens["access_token"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(
        me.1["userPrincipalName"],
        emu.user_principal_name(UserKind::GlobalAdmin)
    );
    assert_aad(
        &redeem(code, verifier.clone(), "http://localhost:53123").await,
        400,
        "invalid_grant",
        54005,
    );

    // A public client must not send a secret.
    let r = authorize(vec![]).await.unwrap();
    let code = param(&location(&r), "code").unwrap();
    let with_secret = post_form(
        &token_url(&emu, "organizations"),
        &[
            ("grant_type", "authorization_code"),
            ("client_id", AZURE_CLI),
            ("code", &code),
            ("redirect_uri", redirect),
            ("code_verifier", &verifier),
            ("client_secret", "s"),
        ],
    )
    .await;
    assert_aad(&with_secret, 401, "invalid_client", 700025);

    // Errors after the redirect URI is trusted go back to it, with the state.
    let r = authorize(vec![("response_type", "token")]).await.unwrap();
    assert_eq!(r.status(), 302);
    let back = location(&r);
    assert_eq!(
        param(&back, "error").as_deref(),
        Some("unsupported_response_type")
    );
    assert!(
        param(&back, "error_description")
            .unwrap()
            .starts_with("AADSTS")
    );
    assert_eq!(param(&back, "state").as_deref(), Some("st-42"));
    let r = authorize(vec![("scope", "https://graph.microsoft.us/.default")])
        .await
        .unwrap();
    assert_eq!(
        param(&location(&r), "error").as_deref(),
        Some("invalid_resource")
    );

    // An untrusted redirect URI gets an error page, never a redirect.
    let r = authorize(vec![("redirect_uri", "https://evil.example/cb")])
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    assert!(r.text().await.unwrap().contains("AADSTS50011"));
    emu.shutdown().await;
}

#[tokio::test]
async fn graph_and_partner_center_refuse_tokens_that_are_not_theirs() {
    let emu = start(quick()).await;
    let g = graph_token(&emu).await;
    let (app_id, secret) = emu.automation_credentials();
    let pc_app = client_credentials(&emu, &app_id, secret.expose(), PC_DEFAULT)
        .await
        .1["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    let none = body(
        http()
            .get(format!("{}/v1.0/me", emu.graph_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_graph(&none, 401, "InvalidAuthenticationToken");
    assert_graph(
        &graph(&emu, "GET", "organization", &pc_app, None).await,
        401,
        "InvalidAuthenticationToken",
    );
    assert_pc(&pc(&emu, "customers?size=1", &g).await, 401, 401);
    let mut tampered = g.clone();
    tampered.insert(tampered.len() / 2, 'x');
    assert_graph(
        &graph(&emu, "GET", "me", &tampered, None).await,
        401,
        "InvalidAuthenticationToken",
    );

    let err = graph(&emu, "GET", "me", &pc_app, None).await;
    assert_eq!(
        err.1["error"]["innerError"]["client-request-id"],
        "11111111-2222-3333-4444-555555555555"
    );

    // An App-only Graph token is refused by /me.
    let app_graph = client_credentials(
        &emu,
        &app_id,
        secret.expose(),
        "https://graph.microsoft.com/.default",
    )
    .await
    .1["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_graph(
        &graph(&emu, "GET", "me", &app_graph, None).await,
        400,
        "BadRequest",
    );

    // Expired tokens.
    emu.update_knobs(|k| k.access_token_lifetime = Some(Duration::ZERO));
    let expired = graph_token(&emu).await;
    let e = graph(&emu, "GET", "me", &expired, None).await;
    assert_graph(&e, 401, "InvalidAuthenticationToken");
    assert!(
        e.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    // The retired Azure AD Graph audience gets Partner Center's own code.
    emu.update_knobs(|k| k.access_token_lifetime = None);
    let aad_graph = client_credentials(
        &emu,
        &app_id,
        secret.expose(),
        "https://graph.windows.net/.default",
    )
    .await
    .1["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_pc(
        &pc(
            &emu,
            "profiles/legalbusiness?vettingVersion=Current",
            &aad_graph,
        )
        .await,
        401,
        900420,
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn onboarding_through_graph_as_global_admin() {
    let emu = start(Knobs {
        member_of_page_size: 3,
        ..quick()
    })
    .await;
    let t = graph_token(&emu).await;

    let (s, me) = graph(
        &emu,
        "GET",
        "me?$select=id,userPrincipalName,displayName",
        &t,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        me.as_object()
            .unwrap()
            .keys()
            .filter(|k| !k.starts_with('@'))
            .count(),
        3,
        "{me}"
    );
    assert_graph(
        &graph(&emu, "GET", "me?$select=id,shoeSize", &t, None).await,
        400,
        "BadRequest",
    );

    let (_, org) = graph(
        &emu,
        "GET",
        "organization?$select=id,displayName,verifiedDomains",
        &t,
        None,
    )
    .await;
    assert_eq!(org["value"][0]["id"], emu.tenant_id());

    // memberOf and transitiveMemberOf page with absolute nextLinks on the emulator's Graph URL,
    // each on its own route; with no nested groups here, both list the same objects.
    let mut listed = vec![];
    for route in ["memberOf", "transitiveMemberOf"] {
        let mut url = format!(
            "{}/v1.0/me/{route}?$select=id,displayName,roleTemplateId",
            emu.graph_url()
        );
        let mut items = vec![];
        let mut pages = 0;
        loop {
            let (s, page) = body(http().get(&url).bearer_auth(&t).send().await.unwrap()).await;
            assert_eq!(s, 200, "{route}: {page}");
            pages += 1;
            items.extend(page["value"].as_array().unwrap().clone());
            match page["@odata.nextLink"].as_str() {
                Some(next) => {
                    assert!(
                        next.starts_with(&format!("{}/v1.0/me/{route}?", emu.graph_url())),
                        "{next}"
                    );
                    url = next.to_string();
                }
                None => break,
            }
        }
        assert!(pages >= 2, "{route}");
        assert!(
            items
                .iter()
                .any(|i| i["roleTemplateId"] == "62e90394-69f5-4237-9190-012177145e10"),
            "{route}"
        );
        assert_graph(
            &graph(
                &emu,
                "GET",
                &format!("me/{route}?$select=id,shoeSize"),
                &t,
                None,
            )
            .await,
            400,
            "BadRequest",
        );
        listed.push(items);
    }
    assert_eq!(listed[0], listed[1]);

    let (s, _) = graph(
        &emu,
        "GET",
        &format!("servicePrincipals(appId='{PC_APP}')"),
        &t,
        None,
    )
    .await;
    assert_eq!(s, 200);

    // Strict create-application bodies.
    let url = format!("{}/v1.0/applications", emu.graph_url());
    let text_body = body(
        http()
            .post(&url)
            .bearer_auth(&t)
            .header("content-type", "text/plain")
            .body(web_app_body("x").to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_graph(&text_body, 400, "BadRequest");
    let mut unknown = web_app_body("x");
    unknown["signinAudience"] = json!("AzureADMyOrg");
    assert_graph(
        &graph(&emu, "POST", "applications", &t, Some(unknown)).await,
        400,
        "BadRequest",
    );
    let mut bad_guid = web_app_body("x");
    bad_guid["requiredResourceAccess"][0]["resourceAppId"] = json!("not-a-guid");
    let e = graph(&emu, "POST", "applications", &t, Some(bad_guid)).await;
    assert_graph(&e, 400, "Request_BadRequest");
    assert_eq!(
        e.1["error"]["message"],
        "Invalid object identifier 'not-a-guid'."
    );
    let (s, defaulted) = graph(
        &emu,
        "POST",
        "applications",
        &t,
        Some(json!({"displayName": "no audience"})),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(
        defaulted["signInAudience"],
        "AzureADandPersonalMicrosoftAccount"
    );

    let (app_id, id, secret) = create_app_with_secret(&emu, &t).await;
    assert!(secret.len() >= 32);
    let again = graph(
        &emu,
        "POST",
        "servicePrincipals",
        &t,
        Some(json!({"appId": app_id})),
    )
    .await;
    assert_graph(&again, 409, "Request_MultipleObjectsWithSameKeyValue");
    assert_graph(
        &graph(&emu, "GET", "applications(appId='nope')", &t, None).await,
        400,
        "Request_BadRequest",
    );
    assert_graph(
        &graph(
            &emu,
            "GET",
            "applications?$filter=appId eq 'nope'",
            &t,
            None,
        )
        .await,
        400,
        "Request_BadRequest",
    );
    assert_graph(
        &graph(
            &emu,
            "GET",
            "applications(appId='0e0e0e0e-1111-2222-3333-444444444444')",
            &t,
            None,
        )
        .await,
        404,
        "Request_ResourceNotFound",
    );

    // secretText only in the addPassword response.
    let (s, read) = graph(
        &emu,
        "GET",
        &format!("applications(appId='{app_id}')?$select=id,appId,displayName,passwordCredentials"),
        &t,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let pw = &read["passwordCredentials"][0];
    assert_eq!(pw["secretText"], Value::Null);
    assert_eq!(pw["hint"].as_str().unwrap(), &secret[..3]);
    assert_eq!(pw["endDateTime"], "2027-06-01T00:00:00Z");
    let (_, filtered) = graph(
        &emu,
        "GET",
        &format!("applications?$filter=appId eq '{app_id}'"),
        &t,
        None,
    )
    .await;
    assert_eq!(filtered["value"][0]["id"], id);
    assert!(!filtered.to_string().contains(&secret));

    // Pre-consent: the service principal joins AdminAgents, once.
    let (_, groups) = graph(
        &emu,
        "GET",
        "groups?$filter=displayName eq 'AdminAgents'&$select=id",
        &t,
        None,
    )
    .await;
    let gid = groups["value"][0]["id"].as_str().unwrap().to_string();
    let (_, sp) = graph(
        &emu,
        "GET",
        &format!("servicePrincipals(appId='{app_id}')"),
        &t,
        None,
    )
    .await;
    let member = json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{}", sp["id"].as_str().unwrap())});
    let (s, _) = graph(
        &emu,
        "POST",
        &format!("groups/{gid}/members/$ref"),
        &t,
        Some(member.clone()),
    )
    .await;
    assert_eq!(s, 204);
    let dup = graph(
        &emu,
        "POST",
        &format!("groups/{gid}/members/$ref"),
        &t,
        Some(member),
    )
    .await;
    assert_graph(&dup, 400, "Request_BadRequest");
    assert!(
        dup.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already exist")
    );
    assert!(
        emu.applications()
            .iter()
            .any(|a| a.app_id == app_id && a.in_admin_agents && a.has_service_principal)
    );

    // The new secret works for client credentials and an App-only Partner Center call.
    let (s, cc) = client_credentials(&emu, &app_id, &secret, PC_DEFAULT).await;
    assert_eq!(s, 200, "{cc}");
    let app_token = cc["access_token"].as_str().unwrap();
    let (s, lb) = pc(
        &emu,
        "profiles/legalbusiness?vettingVersion=Current",
        app_token,
    )
    .await;
    assert_eq!(
        (s, lb["profileType"].as_str()),
        (200, Some("LegalBusinessProfile"))
    );
    let (s, customers) = pc(&emu, "customers?size=1", app_token).await;
    assert_eq!(s, 200);
    assert_eq!(customers["items"].as_array().unwrap().len(), 1);
    assert!(
        customers["totalCount"].is_number()
            && customers["links"].is_object()
            && customers["attributes"].is_object()
    );
    assert_pc(
        &pc(&emu, "profiles/organization", app_token).await,
        403,
        900150,
    );
    let logged = emu
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.service == Service::PartnerCenter)
        .unwrap();
    assert_eq!(
        logged.ms_request_id.as_deref(),
        Some("0a0a0a0a-0000-0000-0000-000000000001")
    );
    assert_eq!(
        logged.ms_correlation_id.as_deref(),
        Some("0c0c0c0c-0000-0000-0000-000000000002")
    );

    // Removing the key stops it at once; removing it twice is an error.
    let key_id = pw["keyId"].as_str().unwrap();
    let (s, _) = graph(
        &emu,
        "POST",
        &format!("applications/{id}/removePassword"),
        &t,
        Some(json!({"keyId": key_id})),
    )
    .await;
    assert_eq!(s, 204);
    assert_aad(
        &client_credentials(&emu, &app_id, &secret, PC_DEFAULT).await,
        401,
        "invalid_client",
        7000215,
    );
    assert_graph(
        &graph(
            &emu,
            "POST",
            &format!("applications/{id}/removePassword"),
            &t,
            Some(json!({"keyId": key_id})),
        )
        .await,
        400,
        "Request_BadRequest",
    );

    assert_eq!(emu.count("POST", "/addPassword"), 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn tenant_policies_limit_secrets() {
    let emu = start(Knobs {
        max_password_lifetime: Some(Duration::from_secs(365 * 86_400)),
        grant_policy_read: true,
        ..quick()
    })
    .await;
    let t = graph_token(&emu).await;
    let (s, policy) = graph(&emu, "GET", "policies/defaultAppManagementPolicy", &t, None).await;
    assert_eq!(s, 200);
    let r = &policy["applicationRestrictions"]["passwordCredentials"][0];
    assert_eq!(
        (r["restrictionType"].as_str(), r["maxLifetime"].as_str()),
        (Some("passwordLifetime"), Some("P365D"))
    );

    let (_, app) = graph(
        &emu,
        "POST",
        "applications",
        &t,
        Some(web_app_body("policy")),
    )
    .await;
    let id = app["id"].as_str().unwrap();
    let two_years = (time::OffsetDateTime::now_utc() + time::Duration::days(730))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let e = graph(
        &emu,
        "POST",
        &format!("applications/{id}/addPassword"),
        &t,
        Some(json!({"passwordCredential": {"displayName": "k", "endDateTime": two_years}})),
    )
    .await;
    assert_graph(&e, 400, "CredentialInvalidLifetimeAsPerAppPolicy");
    assert_eq!(e.1["error"]["details"][0]["code"], "InvalidKeyEndDate");
    assert_eq!(e.1["error"]["details"][0]["target"], "EndDate");
    // The cap is the policy's business: the refusal does not tell it.
    assert!(!e.1.to_string().contains("P365D"), "{}", e.1);
    let one_year = (time::OffsetDateTime::now_utc() + time::Duration::days(364))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (s, _) = graph(
        &emu,
        "POST",
        &format!("applications/{id}/addPassword"),
        &t,
        Some(json!({"passwordCredential": {"displayName": "k", "endDateTime": one_year}})),
    )
    .await;
    assert_eq!(s, 200);

    emu.update_knobs(|k| k.max_app_passwords = Some(1));
    let full = graph(
        &emu,
        "POST",
        &format!("applications/{id}/addPassword"),
        &t,
        Some(json!({"passwordCredential": {"displayName": "k2", "endDateTime": one_year}})),
    )
    .await;
    assert_graph(&full, 400, "Directory_ResourceSizeExceeded");

    emu.update_knobs(|k| k.passwords_disallowed = true);
    let e = graph(
        &emu,
        "POST",
        &format!("applications/{id}/addPassword"),
        &t,
        Some(json!({"passwordCredential": {"displayName": "k", "endDateTime": one_year}})),
    )
    .await;
    assert_graph(&e, 400, "CredentialTypeNotAllowedAsPerAppPolicy");
    emu.shutdown().await;
}

// Who may make each call (microsoft-apis.md §3.0, from Graph's "Create application", "Create
// servicePrincipal", "application: addPassword", "Add members" and "Get tenantAppManagementPolicy"
// pages). Role template IDs from Entra's "Microsoft Entra built-in roles".
const GLOBAL_ADMIN_ROLE: &str = "62e90394-69f5-4237-9190-012177145e10";
const APPLICATION_ADMIN_ROLE: &str = "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3";
const APPLICATION_DEVELOPER_ROLE: &str = "cf1c38e5-3621-4004-a7cb-879624dced7c";
const POLICY: &str = "policies/defaultAppManagementPolicy";

/// A delegated Graph token (the public client's `.default`) for the seeded user of this kind.
async fn token_as(emu: &Emulator, who: UserKind) -> String {
    emu.update_knobs(|k| k.signed_in_user = who);
    graph_token(emu).await
}

/// Graph's 403 for a caller without the right: `Authorization_RequestDenied`.
fn assert_denied(got: &(u16, Value)) {
    assert_graph(got, 403, "Authorization_RequestDenied");
    assert_eq!(
        got.1["error"]["message"],
        "Insufficient privileges to complete the operation."
    );
}

/// `POST /applications` (a multi-tenant web app) → 201: (appId, object id).
async fn register_app(emu: &Emulator, token: &str, name: &str) -> (String, String) {
    let (s, app) = graph(emu, "POST", "applications", token, Some(web_app_body(name))).await;
    assert_eq!(s, 201, "{app}");
    (
        app["appId"].as_str().unwrap().to_string(),
        app["id"].as_str().unwrap().to_string(),
    )
}

async fn create_sp(emu: &Emulator, token: &str, app_id: &str) -> (u16, Value) {
    graph(
        emu,
        "POST",
        "servicePrincipals",
        token,
        Some(json!({"appId": app_id})),
    )
    .await
}

async fn add_password(emu: &Emulator, token: &str, object_id: &str) -> (u16, Value) {
    graph(
        emu,
        "POST",
        &format!("applications/{object_id}/addPassword"),
        token,
        Some(json!({"passwordCredential": {"displayName": "k"}})),
    )
    .await
}

/// `removePassword` of the app's first key.
async fn remove_first_password(emu: &Emulator, token: &str, app_id: &str) -> (u16, Value) {
    let (_, app) = graph(
        emu,
        "GET",
        &format!("applications(appId='{app_id}')"),
        token,
        None,
    )
    .await;
    let key_id = app["passwordCredentials"][0]["keyId"].as_str().unwrap();
    graph(
        emu,
        "POST",
        &format!("applications(appId='{app_id}')/removePassword"),
        token,
        Some(json!({"keyId": key_id})),
    )
    .await
}

/// `POST /groups/{id}/members/$ref` adding a service principal to the group of that name.
async fn add_to_group(emu: &Emulator, token: &str, group: &str, sp_id: &str) -> (u16, Value) {
    let (s, groups) = graph(
        emu,
        "GET",
        &format!("groups?$filter=displayName eq '{group}'&$select=id"),
        token,
        None,
    )
    .await;
    assert_eq!(s, 200, "{groups}");
    let gid = groups["value"][0]["id"].as_str().unwrap();
    let member =
        json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{sp_id}")});
    graph(
        emu,
        "POST",
        &format!("groups/{gid}/members/$ref"),
        token,
        Some(member),
    )
    .await
}

/// An app someone else made in Partner Center's App management, with its service principal
/// (not in AdminAgents) and one key: (appId, object id, service principal id).
async fn someone_elses_app(emu: &Emulator, token: &str) -> (String, String, String) {
    let (app_id, object_id, _) = emu.portal_create_app("someone else's");
    let (s, sp) = graph(
        emu,
        "GET",
        &format!("servicePrincipals(appId='{app_id}')"),
        token,
        None,
    )
    .await;
    assert_eq!(s, 200, "{sp}");
    (app_id, object_id, sp["id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn global_admin_registers_the_app_creates_its_service_principal_and_adds_it_to_admin_agents()
{
    let emu = start(quick()).await;
    let t = token_as(&emu, UserKind::GlobalAdmin).await;
    let (app_id, object_id) = register_app(&emu, &t, "mine").await;
    let (s, sp) = create_sp(&emu, &t, &app_id).await;
    assert_eq!(s, 201, "{sp}");
    assert_eq!(add_password(&emu, &t, &object_id).await.0, 200);
    let (other_app, other_object, _) = someone_elses_app(&emu, &t).await;
    let (plain_app, plain_object) =
        register_app(&emu, &token_as(&emu, UserKind::Plain).await, "plain's").await;
    assert_eq!(add_password(&emu, &t, &plain_object).await.0, 200);
    assert_eq!(remove_first_password(&emu, &t, &plain_app).await.0, 204);
    assert_eq!(add_password(&emu, &t, &other_object).await.0, 200);
    assert_eq!(remove_first_password(&emu, &t, &other_app).await.0, 204);
    let sp_id = sp["id"].as_str().unwrap();
    let (s, b) = add_to_group(&emu, &t, "AdminAgents", sp_id).await;
    assert_eq!(s, 204, "{b}");
    emu.shutdown().await;
}

#[tokio::test]
async fn admin_agent_registers_an_app_but_may_not_create_its_service_principal_nor_add_to_admin_agents()
 {
    let emu = start(quick()).await;
    let t = token_as(&emu, UserKind::AdminAgent).await;
    // Any member may register an app, and owns it.
    let (app_id, object_id) = register_app(&emu, &t, "agent's").await;
    assert_eq!(add_password(&emu, &t, &object_id).await.0, 200);
    assert_eq!(remove_first_password(&emu, &t, &app_id).await.0, 204);
    // A multi-tenant app's service principal needs an app-admin role: nothing is created.
    assert_denied(&create_sp(&emu, &t, &app_id).await);
    let mine = emu.applications();
    let mine = mine.iter().find(|a| a.app_id == app_id).unwrap();
    assert!(!mine.has_service_principal);
    // Someone else's app: no keys added or removed.
    let (other_app, other_object, other_sp) = someone_elses_app(&emu, &t).await;
    assert_denied(&add_password(&emu, &t, &other_object).await);
    assert_denied(&remove_first_password(&emu, &t, &other_app).await);
    // Being in AdminAgents gives no right over AdminAgents.
    assert_denied(&add_to_group(&emu, &t, "AdminAgents", &other_sp).await);
    let other = emu.applications();
    let other = other.iter().find(|a| a.app_id == other_app).unwrap();
    assert_eq!((other.passwords.len(), other.in_admin_agents), (1, false));
    emu.shutdown().await;
}

#[tokio::test]
async fn application_admin_creates_the_service_principal_and_manages_any_app_but_may_not_add_to_admin_agents()
 {
    let emu = start(quick()).await;
    let t = token_as(&emu, UserKind::AppAdmin).await;
    let (app_id, object_id) = register_app(&emu, &t, "app admin's").await;
    let (s, sp) = create_sp(&emu, &t, &app_id).await;
    assert_eq!(s, 201, "{sp}");
    assert_eq!(add_password(&emu, &t, &object_id).await.0, 200);
    let (other_app, other_object, _) = someone_elses_app(&emu, &t).await;
    assert_eq!(add_password(&emu, &t, &other_object).await.0, 200);
    assert_eq!(remove_first_password(&emu, &t, &other_app).await.0, 204);
    // No group role: AdminAgents stays out of reach.
    assert_denied(&add_to_group(&emu, &t, "AdminAgents", sp["id"].as_str().unwrap()).await);
    let apps = emu.applications();
    let mine = apps.iter().find(|a| a.app_id == app_id).unwrap();
    assert_eq!(
        (mine.has_service_principal, mine.in_admin_agents),
        (true, false)
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn plain_user_registers_and_manages_only_own_apps_and_adds_members_only_to_a_group_they_own()
{
    let emu = start(quick()).await;
    let t = token_as(&emu, UserKind::Plain).await;
    let (app_id, object_id) = register_app(&emu, &t, "mine").await;
    assert_eq!(add_password(&emu, &t, &object_id).await.0, 200);
    assert_denied(&create_sp(&emu, &t, &app_id).await);
    let (other_app, other_object, other_sp) = someone_elses_app(&emu, &t).await;
    assert_denied(&add_password(&emu, &t, &other_object).await);
    assert_denied(&remove_first_password(&emu, &t, &other_app).await);
    assert_denied(&add_to_group(&emu, &t, "AdminAgents", &other_sp).await);
    // The seed makes user@ the owner of "Project Phoenix": owners add members without a role.
    let (s, b) = add_to_group(&emu, &t, "Project Phoenix", &other_sp).await;
    assert_eq!(s, 204, "{b}");
    emu.shutdown().await;
}

#[tokio::test]
async fn patching_an_app_needs_its_owner_or_an_app_admin_role() {
    let emu = start(quick()).await;
    let agent = token_as(&emu, UserKind::AdminAgent).await;
    let app_admin = token_as(&emu, UserKind::AppAdmin).await;
    let (app_id, object_id) = register_app(&emu, &agent, "agent's").await;
    let (other_app, other_object, _) = someone_elses_app(&emu, &agent).await;
    let rename = |name: &str| {
        Some(json!({"displayName": name, "web": {"homePageUrl": "https://example.com"}}))
    };
    let (s, b) = graph(
        &emu,
        "PATCH",
        &format!("applications/{object_id}"),
        &agent,
        rename("renamed by its owner"),
    )
    .await;
    assert_eq!(s, 204, "{b}");
    let (_, app) = graph(
        &emu,
        "GET",
        &format!("applications(appId='{app_id}')"),
        &agent,
        None,
    )
    .await;
    assert_eq!(app["displayName"], "renamed by its owner");
    // The redirect URI sent at creation stays: PATCH keeps what it does not name.
    assert_eq!(app["web"]["redirectUris"], json!(["http://localhost"]));
    assert_eq!(app["web"]["homePageUrl"], "https://example.com");
    assert_denied(
        &graph(
            &emu,
            "PATCH",
            &format!("applications/{other_object}"),
            &agent,
            rename("not yours"),
        )
        .await,
    );
    let (s, b) = graph(
        &emu,
        "PATCH",
        &format!("applications(appId='{other_app}')"),
        &app_admin,
        rename("renamed by an application admin"),
    )
    .await;
    assert_eq!(s, 204, "{b}");
    emu.shutdown().await;
}

#[tokio::test]
async fn single_tenant_app_owner_creates_its_service_principal_only_with_application_developer() {
    let emu = start(quick()).await;
    let t = token_as(&emu, UserKind::Plain).await;
    let mut body = web_app_body("single tenant");
    body["signInAudience"] = json!("AzureADMyOrg");
    let (s, single) = graph(&emu, "POST", "applications", &t, Some(body)).await;
    assert_eq!(s, 201, "{single}");
    let single = single["appId"].as_str().unwrap();
    let (multi, _) = register_app(&emu, &t, "multi tenant").await;
    assert_denied(&create_sp(&emu, &t, single).await);

    emu.assign_directory_role(UserKind::Plain, APPLICATION_DEVELOPER_ROLE);
    let (_, m) = graph(&emu, "GET", "me/memberOf?$top=999", &t, None).await;
    assert!(m.to_string().contains(APPLICATION_DEVELOPER_ROLE), "{m}");
    let (s, sp) = create_sp(&emu, &t, single).await;
    assert_eq!(s, 201, "{sp}");
    // Application Developer does not reach multi-tenant apps, even its own.
    assert_denied(&create_sp(&emu, &t, &multi).await);
    // Nor single-tenant apps it does not own.
    let mut body = web_app_body("admin's single tenant");
    body["signInAudience"] = json!("AzureADMyOrg");
    let admin = token_as(&emu, UserKind::GlobalAdmin).await;
    let (_, theirs) = graph(&emu, "POST", "applications", &admin, Some(body)).await;
    assert_denied(&create_sp(&emu, &t, theirs["appId"].as_str().unwrap()).await);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_missing_partner_center_service_principal_is_created_by_an_app_admin_but_not_an_agent() {
    let emu = start(quick()).await;
    assert!(emu.portal_delete_service_principal(PC_APP));
    let agent = token_as(&emu, UserKind::AdminAgent).await;
    let app_admin = token_as(&emu, UserKind::AppAdmin).await;
    assert_graph(
        &graph(
            &emu,
            "GET",
            &format!("servicePrincipals(appId='{PC_APP}')"),
            &agent,
            None,
        )
        .await,
        404,
        "Request_ResourceNotFound",
    );
    // Without it, Entra does not know the Partner Center resource.
    let (s, dc) = post_form(
        &devicecode_url(&emu, "organizations"),
        &[("client_id", AZURE_CLI), ("scope", PC_DEFAULT)],
    )
    .await;
    assert_aad(&(s, dc), 400, "invalid_resource", 500011);
    // Partner Center is a multi-tenant app: an Admin agent may not install it, an admin may.
    assert_denied(&create_sp(&emu, &agent, PC_APP).await);
    let (s, sp) = create_sp(&emu, &app_admin, PC_APP).await;
    assert_eq!(s, 201, "{sp}");
    assert_eq!(
        sp["appOwnerOrganizationId"],
        "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
    );
    assert_graph(
        &create_sp(&emu, &app_admin, PC_APP).await,
        409,
        "Request_MultipleObjectsWithSameKeyValue",
    );
    let (s, dc) = post_form(
        &devicecode_url(&emu, "organizations"),
        &[("client_id", AZURE_CLI), ("scope", PC_DEFAULT)],
    )
    .await;
    assert_eq!(s, 200, "{dc}");
    emu.shutdown().await;
}

#[tokio::test]
async fn a_key_added_in_app_management_authenticates_beside_the_first() {
    let emu = start(quick()).await;
    let (app_id, _, first) = emu.portal_create_app("portal app");
    let (key_id, second) = emu.portal_add_key(&app_id).unwrap();
    for secret in [first.expose(), second.expose()] {
        let (s, b) = client_credentials(&emu, &app_id, secret, PC_DEFAULT).await;
        assert_eq!(s, 200, "{b}");
    }
    let apps = emu.applications();
    let app = apps.iter().find(|a| a.app_id == app_id).unwrap();
    assert_eq!(app.passwords.len(), 2);
    assert!(app.passwords.iter().any(|p| p.key_id == key_id));
    assert!(
        emu.portal_add_key("00000000-1111-2222-3333-444444444444")
            .is_none()
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn member_of_lists_each_users_directory_roles_by_template_id() {
    let emu = start(quick()).await;
    let roles_and_groups = |v: &Value| -> (Vec<String>, Vec<String>) {
        let items = v["value"].as_array().unwrap();
        let of = |t: &str, field: &str| {
            items
                .iter()
                .filter(|i| i["@odata.type"] == t)
                .map(|i| i[field].as_str().unwrap().to_string())
                .collect()
        };
        (
            of("#microsoft.graph.directoryRole", "roleTemplateId"),
            of("#microsoft.graph.group", "displayName"),
        )
    };
    for (who, role, admin_agents) in [
        (UserKind::GlobalAdmin, Some(GLOBAL_ADMIN_ROLE), false),
        (UserKind::AppAdmin, Some(APPLICATION_ADMIN_ROLE), false),
        (UserKind::AdminAgent, None, true),
        (UserKind::Plain, None, false),
    ] {
        let t = token_as(&emu, who).await;
        for route in ["me/memberOf", "me/transitiveMemberOf"] {
            let (s, v) = graph(&emu, "GET", &format!("{route}?$top=999"), &t, None).await;
            assert_eq!(s, 200, "{v}");
            let (roles, groups) = roles_and_groups(&v);
            assert_eq!(
                roles.iter().any(|r| Some(r.as_str()) == role),
                role.is_some(),
                "{who:?} {route}: {roles:?}"
            );
            if who == UserKind::AdminAgent || who == UserKind::Plain {
                assert!(
                    roles.is_empty(),
                    "{who:?} holds no directory role: {roles:?}"
                );
            }
            assert_eq!(
                groups.iter().any(|g| g == "AdminAgents"),
                admin_agents,
                "{who:?} {route}: {groups:?}"
            );
        }
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn no_user_reads_the_app_policy_by_default_because_the_public_client_lacks_policy_read_all() {
    let emu = start(quick()).await;
    for who in [
        UserKind::GlobalAdmin,
        UserKind::AppAdmin,
        UserKind::AdminAgent,
        UserKind::Plain,
    ] {
        emu.update_knobs(|k| k.signed_in_user = who);
        let tokens = sign_in(&emu, GRAPH_DEFAULT).await;
        let scope = tokens["scope"].as_str().unwrap();
        assert!(
            scope.contains("https://graph.microsoft.com/Directory.AccessAsUser.All")
                && !scope.contains("Policy.Read.All"),
            "{scope}"
        );
        let t = tokens["access_token"].as_str().unwrap();
        assert_denied(&graph(&emu, "GET", POLICY, t, None).await);
    }
    // Asking for the permission by name does not get it either.
    emu.update_knobs(|k| k.signed_in_user = UserKind::GlobalAdmin);
    let tokens = sign_in(
        &emu,
        "https://graph.microsoft.com/Policy.Read.All offline_access",
    )
    .await;
    let t = tokens["access_token"].as_str().unwrap();
    assert_denied(&graph(&emu, "GET", POLICY, t, None).await);
    emu.shutdown().await;
}

#[tokio::test]
async fn with_the_policy_read_grant_global_and_app_admins_read_the_policy_but_agents_and_plain_users_do_not()
 {
    let emu = start(Knobs {
        grant_policy_read: true,
        max_password_lifetime: Some(Duration::from_secs(180 * 86_400)),
        ..quick()
    })
    .await;
    for (who, readable) in [
        (UserKind::GlobalAdmin, true),
        (UserKind::AppAdmin, true),
        (UserKind::AdminAgent, false),
        (UserKind::Plain, false),
    ] {
        emu.update_knobs(|k| k.signed_in_user = who);
        let tokens = sign_in(&emu, GRAPH_DEFAULT).await;
        assert!(
            tokens["scope"]
                .as_str()
                .unwrap()
                .contains("https://graph.microsoft.com/Policy.Read.All")
        );
        let got = graph(
            &emu,
            "GET",
            POLICY,
            tokens["access_token"].as_str().unwrap(),
            None,
        )
        .await;
        if readable {
            assert_eq!(got.0, 200, "{who:?}: {}", got.1);
            assert_eq!(
                got.1["applicationRestrictions"]["passwordCredentials"][0]["maxLifetime"],
                "P180D"
            );
        } else {
            assert_denied(&got);
        }
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn replication_delay_hides_new_apps_for_a_while() {
    let emu = start(quick()).await;
    let t = graph_token(&emu).await;
    // Long enough that the requests checking the lag all fit inside it on a loaded machine.
    emu.update_knobs(|k| k.replication_delay = Duration::from_millis(1500));
    // Taken before the app exists, so the wait below is at least the delay however slow the
    // requests in between are.
    let began = Instant::now();
    let (s, app) = graph(
        &emu,
        "POST",
        "applications",
        &t,
        Some(web_app_body("fresh")),
    )
    .await;
    assert_eq!(s, 201);
    let app_id = app["appId"].as_str().unwrap();
    let path = format!("applications(appId='{app_id}')");
    assert_graph(
        &graph(&emu, "GET", &path, &t, None).await,
        404,
        "Request_ResourceNotFound",
    );
    let sp = graph(
        &emu,
        "POST",
        "servicePrincipals",
        &t,
        Some(json!({"appId": app_id})),
    )
    .await;
    assert_graph(&sp, 400, "Request_BadRequest");
    let (_, filtered) = graph(
        &emu,
        "GET",
        &format!("applications?$filter=appId eq '{app_id}'"),
        &t,
        None,
    )
    .await;
    assert_eq!(filtered["value"], json!([]));
    assert_aad(
        &client_credentials(&emu, app_id, "x", PC_DEFAULT).await,
        400,
        "unauthorized_client",
        700016,
    );

    loop {
        let (s, _) = graph(&emu, "GET", &path, &t, None).await;
        if s == 200 {
            break;
        }
        assert_eq!(s, 404);
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "never replicated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(began.elapsed() >= Duration::from_millis(1500));

    // A new service principal lags too: group additions and reads fail until it replicates.
    let (s, sp) = graph(
        &emu,
        "POST",
        "servicePrincipals",
        &t,
        Some(json!({"appId": app_id})),
    )
    .await;
    assert_eq!(s, 201, "{sp}");
    let (_, groups) = graph(
        &emu,
        "GET",
        "groups?$filter=displayName eq 'AdminAgents'&$select=id",
        &t,
        None,
    )
    .await;
    let gid = groups["value"][0]["id"].as_str().unwrap();
    let member = json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{}", sp["id"].as_str().unwrap())});
    assert_graph(
        &graph(
            &emu,
            "POST",
            &format!("groups/{gid}/members/$ref"),
            &t,
            Some(member),
        )
        .await,
        404,
        "Request_ResourceNotFound",
    );
    assert_graph(
        &graph(
            &emu,
            "GET",
            &format!("servicePrincipals(appId='{app_id}')"),
            &t,
            None,
        )
        .await,
        404,
        "Request_ResourceNotFound",
    );
    // And so does a second new app for writes.
    let (_, app2) = graph(
        &emu,
        "POST",
        "applications",
        &t,
        Some(web_app_body("fresh 2")),
    )
    .await;
    let add = graph(
        &emu,
        "POST",
        &format!("applications/{}/addPassword", app2["id"].as_str().unwrap()),
        &t,
        Some(json!({})),
    )
    .await;
    assert_graph(&add, 404, "Request_ResourceNotFound");
    emu.shutdown().await;
}

#[tokio::test]
async fn new_secrets_propagate_then_flap_and_expired_ones_are_refused() {
    let emu = start(quick()).await;
    let t = graph_token(&emu).await;
    emu.update_knobs(|k| {
        k.secret_propagation_delay = Duration::from_millis(500);
        k.propagation_flaps = 1;
    });
    let (app_id, _, secret) = create_app_with_secret(&emu, &t).await;
    let cc = || client_credentials(&emu, &app_id, &secret, PC_DEFAULT);
    assert_aad(&cc().await, 401, "invalid_client", 7000215);
    let began = Instant::now();
    loop {
        let (s, b) = cc().await;
        if s == 200 {
            break;
        }
        assert_eq!(b["error_codes"], json!([7000215]));
        assert!(began.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Eventual consistency: a success, then one refusal from a stale replica, then steady.
    assert_aad(&cc().await, 401, "invalid_client", 7000215);
    assert_eq!(cc().await.0, 200);
    assert_eq!(cc().await.0, 200);

    let key = emu
        .applications()
        .into_iter()
        .find(|a| a.app_id == app_id)
        .unwrap()
        .passwords[0]
        .key_id
        .clone();
    assert!(emu.portal_set_password_end(
        &app_id,
        &key,
        time::OffsetDateTime::now_utc() - time::Duration::days(1)
    ));
    assert_aad(&cc().await, 401, "invalid_client", 7000222);
    emu.shutdown().await;
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after() {
    let emu = start(Knobs {
        throttle: vec![
            ThrottleRule {
                route: "GET /v1.0/organization".into(),
                first_n: 2,
                every_nth: 0,
                retry_after_secs: 7,
            },
            ThrottleRule {
                route: "/v1/customers".into(),
                first_n: 1,
                every_nth: 0,
                retry_after_secs: 57,
            },
        ],
        ..quick()
    })
    .await;
    let t = graph_token(&emu).await;
    let url = format!("{}/v1.0/organization", emu.graph_url());
    for _ in 0..2 {
        let r = http()
            .get(&url)
            .bearer_auth(&t)
            .header("client-request-id", "5e0c1f0a-1111-4222-8333-944455556666")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["retry-after"], "7");
        assert_eq!(
            r.headers()["client-request-id"],
            "5e0c1f0a-1111-4222-8333-944455556666",
            "echoed on throttling too"
        );
        assert_graph(&body(r).await, 429, "TooManyRequests");
    }
    assert_eq!(graph(&emu, "GET", "organization", &t, None).await.0, 200);

    let (app_id, secret) = emu.automation_credentials();
    let pc_token = client_credentials(&emu, &app_id, secret.expose(), PC_DEFAULT)
        .await
        .1["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = http()
        .get(format!("{}/v1/customers?size=1", emu.partner_center_url()))
        .bearer_auth(&pc_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "57");
    let (s, b) = body(r).await;
    assert_eq!(s, 429);
    assert_eq!(
        b,
        json!({"statusCode": 429, "message": "Rate limit is exceeded. Try again in 57 seconds."})
    );
    assert_eq!(pc(&emu, "customers?size=1", &pc_token).await.0, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn faults_answer_5xx_or_drop_the_connection() {
    let emu = start(Knobs {
        faults: vec![
            FaultRule {
                route: "GET /v1.0/organization".into(),
                first_n: 1,
                kind: FaultKind::Status(503),
            },
            FaultRule {
                route: "GET /v1.0/me".into(),
                first_n: 1,
                kind: FaultKind::DropConnection,
            },
        ],
        ..quick()
    })
    .await;
    let t = graph_token(&emu).await;
    assert_graph(
        &graph(&emu, "GET", "organization", &t, None).await,
        503,
        "serviceNotAvailable",
    );
    assert_eq!(graph(&emu, "GET", "organization", &t, None).await.0, 200);

    let dropped = http()
        .get(format!("{}/v1.0/me", emu.graph_url()))
        .bearer_auth(&t)
        .send()
        .await;
    assert!(
        dropped.is_err(),
        "the connection should close without a response"
    );
    assert_eq!(graph(&emu, "GET", "me", &t, None).await.0, 200);
    let log = emu.requests();
    assert!(
        log.iter()
            .any(|r| r.path == "/v1.0/me" && !r.delivered && r.status == 0)
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn hang_after_request_applies_then_never_answers() {
    let emu = start(quick()).await;
    let t = graph_token(&emu).await;
    let next_seq = emu.requests().len() as u64 + 1;
    emu.update_knobs(|k| k.hang_after_request = Some(next_seq));
    let r = http()
        .post(format!("{}/v1.0/applications", emu.graph_url()))
        .bearer_auth(&t)
        .json(&web_app_body("half-done"))
        .timeout(Duration::from_millis(700))
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_timeout()));
    assert!(
        emu.applications()
            .iter()
            .any(|a| a.display_name == "half-done"),
        "the request was applied"
    );
    // Everything else keeps working.
    assert_eq!(graph(&emu, "GET", "organization", &t, None).await.0, 200);
    emu.shutdown().await;
}

#[tokio::test]
async fn latency_is_added_to_every_request() {
    let emu = start(Knobs {
        latency: Duration::from_millis(250),
        ..Knobs::default()
    })
    .await;
    let began = Instant::now();
    let _ = http()
        .get(format!("{}/v1.0/me", emu.graph_url()))
        .send()
        .await
        .unwrap();
    assert!(began.elapsed() >= Duration::from_millis(250));
    emu.shutdown().await;
}

#[tokio::test]
async fn state_file_survives_restarts_and_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("emulator.json");
    let config = || EmulatorConfig {
        port: 0,
        state_file: Some(path.clone()),
        knobs: Knobs::default(),
    };
    let emu = Emulator::start(config()).await.unwrap();
    let tenant = emu.tenant_id();
    let (app_id, _, secret) = emu.portal_create_app("kept");
    emu.shutdown().await;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains(secret.expose()),
        "app secrets are stored as digests"
    );

    let emu = Emulator::start(config()).await.unwrap();
    assert_eq!(emu.tenant_id(), tenant);
    assert!(emu.applications().iter().any(|a| a.app_id == app_id));
    let (s, b) = client_credentials(&emu, &app_id, secret.expose(), PC_DEFAULT).await;
    assert_eq!(s, 200, "{b}");
    emu.shutdown().await;
}

#[tokio::test]
async fn partner_center_knobs() {
    let emu = start(Knobs {
        require_pc_app_registration: true,
        ..quick()
    })
    .await;
    let t = graph_token(&emu).await;
    let (app_id, _, secret) = create_app_with_secret(&emu, &t).await;
    let token = client_credentials(&emu, &app_id, &secret, PC_DEFAULT)
        .await
        .1["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_pc(
        &pc(
            &emu,
            "profiles/legalbusiness?vettingVersion=Current",
            &token,
        )
        .await,
        401,
        800001,
    );
    emu.register_app_in_partner_center(&app_id);
    assert_eq!(
        pc(
            &emu,
            "profiles/legalbusiness?vettingVersion=Current",
            &token
        )
        .await
        .0,
        200
    );

    // App+User without MFA.
    emu.update_knobs(|k| k.user_without_mfa = true);
    let user_pc = sign_in(
        &emu,
        "https://api.partnercenter.microsoft.com/user_impersonation",
    )
    .await;
    assert_pc(
        &pc(
            &emu,
            "profiles/organization",
            user_pc["access_token"].as_str().unwrap(),
        )
        .await,
        401,
        900421,
    );

    // Not a CSP tenant: no Partner Center service principal, no token for it, and 403.
    emu.update_knobs(|k| k.not_csp_tenant = true);
    assert_graph(
        &graph(
            &emu,
            "GET",
            &format!("servicePrincipals(appId='{PC_APP}')"),
            &t,
            None,
        )
        .await,
        404,
        "Request_ResourceNotFound",
    );
    assert_aad(
        &client_credentials(&emu, &app_id, &secret, PC_DEFAULT).await,
        400,
        "invalid_resource",
        500011,
    );
    assert_pc(&pc(&emu, "customers?size=1", &token).await, 403, 900150);
    emu.shutdown().await;
}

#[tokio::test]
async fn automation_identity_has_application_permissions() {
    let emu = start(Knobs::default()).await;
    let (app_id, secret) = emu.automation_credentials();
    let (s, b) = client_credentials(
        &emu,
        &app_id,
        secret.expose(),
        "https://graph.microsoft.com/.default",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let t = b["access_token"].as_str().unwrap();
    let (app_created, _, _) = {
        let (s, app) = graph(
            &emu,
            "POST",
            "applications",
            t,
            Some(web_app_body("by automation")),
        )
        .await;
        assert_eq!(s, 201, "{app}");
        (app["appId"].as_str().unwrap().to_string(), (), ())
    };
    let (s, _) = graph(
        &emu,
        "POST",
        "servicePrincipals",
        t,
        Some(json!({"appId": app_created})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, g) = graph(
        &emu,
        "GET",
        "groups?$filter=displayName eq 'AdminAgents'&$select=id",
        t,
        None,
    )
    .await;
    assert_eq!(s, 200, "{g}");
    // Policy.Read.All is not among its permissions.
    assert_graph(
        &graph(&emu, "GET", "policies/defaultAppManagementPolicy", t, None).await,
        403,
        "Authorization_RequestDenied",
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn the_request_log_never_holds_secrets() {
    let emu = start(quick()).await;
    let tokens = sign_in(&emu, GRAPH_DEFAULT).await;
    let (app_id, secret) = emu.automation_credentials();
    let _ = client_credentials(&emu, &app_id, secret.expose(), PC_DEFAULT).await;
    let log = format!("{:?}", emu.requests());
    for s in [
        secret.expose(),
        tokens["access_token"].as_str().unwrap(),
        tokens["refresh_token"].as_str().unwrap(),
    ] {
        assert!(!log.contains(s));
    }
    assert_eq!(emu.count("POST", "/oauth2/v2.0/token"), 2);
    emu.shutdown().await;
}

/// Graph "Delete application" (`DELETE /applications/{id}`, 204): the same rights as
/// removePassword. A plain user may delete an app they own but not another's (403); a deleted
/// app is gone (404), and deleting it again is 404.
#[tokio::test]
async fn delete_application_follows_the_who_may_write_rule() {
    let emu = start(quick()).await;
    let admin = token_as(&emu, UserKind::GlobalAdmin).await;
    let plain = token_as(&emu, UserKind::Plain).await;
    let (_, admins_object) = register_app(&emu, &admin, "the admin's").await;
    let (_, plains_object) = register_app(&emu, &plain, "plain's").await;
    let delete = |token: &str, object: &str| {
        let (token, path) = (token.to_string(), format!("applications/{object}"));
        let emu = &emu;
        async move { graph(emu, "DELETE", &path, &token, None).await }
    };
    assert_denied(&delete(&plain, &admins_object).await);
    assert_eq!(delete(&plain, &plains_object).await.0, 204);
    assert_eq!(delete(&admin, &admins_object).await.0, 204);
    let (s, _) = graph(
        &emu,
        "GET",
        &format!("applications/{admins_object}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(s, 404);
    assert_graph(
        &delete(&admin, &admins_object).await,
        404,
        "Request_ResourceNotFound",
    );
}
