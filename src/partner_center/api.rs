//! Partner Center REST of microsoft-apis.md §4: the cheap App-only check (the legal business
//! profile) that proves Partner Center accepts an app.

use super::errors::{ApiError, Service};
use super::http::{HttpClient, Request, Response, header};
use crate::cloud::Endpoints;
use crate::secret::Secret;

/// A Partner Center client for one token (App+User or App-only).
#[derive(Clone)]
pub struct PartnerCenter {
    http: HttpClient,
    base: url::Url,
    token: Secret,
}

impl std::fmt::Debug for PartnerCenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartnerCenter")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl PartnerCenter {
    pub fn new(http: HttpClient, ep: &Endpoints, token: Secret) -> Self {
        PartnerCenter {
            http,
            base: ep.partner_center.clone(),
            token,
        }
    }

    async fn get(&self, path: &str) -> Result<Response, ApiError> {
        let mut req = Request::new(
            Service::PartnerCenter,
            reqwest::Method::GET,
            Endpoints::join(&self.base, path),
        );
        req.bearer = Some(self.token.clone());
        req.headers.push(header("accept", "application/json"));
        // Partner Center's REST reference lists this header as required on every request.
        req.headers.push(header("ms-contract-version", "v1"));
        // New IDs for every call (Partner Center's REST headers page); `execute` re-sends these
        // same headers on its retries of that call.
        let request_id = uuid::Uuid::new_v4().to_string();
        let correlation_id = uuid::Uuid::new_v4().to_string();
        req.headers.push(header("ms-requestid", &request_id));
        req.headers
            .push(header("ms-correlationid", &correlation_id));
        self.http.execute(&req).await.map_err(|mut e| {
            e.request_id.get_or_insert(request_id);
            e.correlation_id.get_or_insert(correlation_id);
            e
        })
    }

    /// The legal business profile: the cheap proof that Partner Center accepts an App-only token.
    /// The content is not needed, only that the call succeeds.
    pub async fn legal_business_profile(&self) -> Result<(), ApiError> {
        self.get("v1/profiles/legalbusiness?vettingVersion=Current")
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::super::http::fake::{Reply, serve};
    use super::super::http::test_policy;
    use super::*;
    use crate::cloud::Cloud;
    use crate::exit::Exit;

    async fn pc(replies: Vec<Reply>) -> (PartnerCenter, super::super::http::fake::Fake) {
        let fake = serve(replies).await;
        let ep = Endpoints::from_urls(Cloud::Custom, &fake.base, &fake.base, &fake.base).unwrap();
        let http = HttpClient::new().unwrap().with_policy(test_policy());
        (PartnerCenter::new(http, &ep, Secret::new("pc-token")), fake)
    }

    #[tokio::test]
    async fn request_ids_are_new_per_request_and_kept_on_retries() {
        let (pc, fake) = pc(vec![
            Reply::json(
                429,
                r#"{"statusCode":429,"message":"Rate limit is exceeded. Try again in 0 seconds."}"#,
            )
            .header("retry-after", "0"),
            // Partner Center answers start with a byte-order mark.
            Reply::json(200, "\u{feff}{\"companyName\":\"Contoso\"}"),
        ])
        .await;
        pc.legal_business_profile().await.unwrap();
        pc.legal_business_profile().await.unwrap();
        let reqs = fake.requests();
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0].method, "GET");
        assert_eq!(reqs[0].target, reqs[2].target);
        assert_eq!(
            reqs[2].target,
            "/v1/profiles/legalbusiness?vettingVersion=Current"
        );
        assert_eq!(reqs[0].header("authorization"), Some("Bearer pc-token"));
        assert_eq!(reqs[0].header("accept"), Some("application/json"));
        assert!(
            reqs.iter()
                .all(|r| r.header("ms-contract-version") == Some("v1")),
            "the contract version Partner Center requires"
        );
        let rid = |i: usize| reqs[i].header("ms-requestid").unwrap().to_string();
        assert_eq!(rid(0), rid(1), "a retry reuses its request ID");
        assert_ne!(rid(1), rid(2), "a new request gets a new one");
        let cid = |i: usize| reqs[i].header("ms-correlationid").unwrap().to_string();
        assert!(uuid::Uuid::try_parse(&cid(0)).is_ok());
        assert_eq!(cid(0), cid(1), "a retry is the same call");
        assert_ne!(cid(1), cid(2), "every call gets its own correlation ID");
    }

    #[tokio::test]
    async fn errors_carry_our_request_and_correlation_ids() {
        let (pc, _) = pc(vec![Reply::json(
            401,
            r#"{"code":900421,"description":"MFA is required","data":[],"source":"PartnerFD"}"#,
        )])
        .await;
        let e = pc.legal_business_profile().await.unwrap_err();
        assert_eq!(e.partner_center_code, Some(900421));
        assert_eq!(e.exit(), Exit::SignIn);
        let cid = e.correlation_id.clone().expect("the call's correlation ID");
        assert!(e.request_id.is_some());
        assert!(e.to_user_error().message.contains(&cid));
    }
}
