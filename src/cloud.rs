//! Which Microsoft cloud: the three base URLs (authority, Graph, Partner Center) and the token audiences.

use crate::exit::UserError;
use url::Url;

/// The first-party app ID of Partner Center; its service principal exists in every CSP partner tenant.
pub const PARTNER_CENTER_APP_ID: &str = "fa3d9a0c-3fb0-42cc-9193-47c7ecd2edbd";
/// The Partner Center delegated permission `user_impersonation`.
pub const PARTNER_CENTER_USER_IMPERSONATION: &str = "1cebfa2a-fb4d-419e-b5f9-839b4383e05a";
/// The Azure CLI public client, which Microsoft's own Partner Center PowerShell signs in with.
pub const DEFAULT_PUBLIC_CLIENT_ID: &str = "04b07795-8ddb-461a-bbee-02f9e1bf7b46";

pub const ENV_AUTHORITY: &str = "CSP_ONBOARD_AUTHORITY_URL";
pub const ENV_GRAPH: &str = "CSP_ONBOARD_GRAPH_URL";
pub const ENV_PARTNER_CENTER: &str = "CSP_ONBOARD_PARTNER_CENTER_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    Global,
    Usgov,
    China,
    Emulator,
    Custom,
}

impl Cloud {
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Global => "global",
            Cloud::Usgov => "usgov",
            Cloud::China => "china",
            Cloud::Emulator => "emulator",
            Cloud::Custom => "custom",
        }
    }
}

/// Base URLs and audiences for one cloud. Base URLs carry no trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub cloud: Cloud,
    pub authority: Url,
    pub graph: Url,
    pub partner_center: Url,
    /// Resource identifier of Graph (the scope prefix and token audience).
    pub graph_resource: String,
    /// Resource identifier of Partner Center.
    pub partner_center_resource: String,
}

const GLOBAL_GRAPH: &str = "https://graph.microsoft.com";
const GLOBAL_PC: &str = "https://api.partnercenter.microsoft.com";

impl Endpoints {
    /// The fixed endpoints of a public cloud. `emulator` and `custom` come from `from_urls`.
    pub fn public(cloud: Cloud) -> Option<Endpoints> {
        let (authority, graph, pc, pc_resource) = match cloud {
            Cloud::Global => (
                "https://login.microsoftonline.com",
                GLOBAL_GRAPH,
                GLOBAL_PC,
                GLOBAL_PC,
            ),
            Cloud::Usgov => (
                "https://login.microsoftonline.us",
                "https://graph.microsoft.us",
                GLOBAL_PC,
                GLOBAL_PC,
            ),
            Cloud::China => (
                "https://login.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn",
                "https://partner.partnercenterapi.microsoftonline.cn",
                "https://partner.partnercenterapi.microsoftonline.cn",
            ),
            Cloud::Emulator | Cloud::Custom => return None,
        };
        Some(Endpoints {
            cloud,
            authority: Url::parse(authority).expect("static URL"),
            graph: Url::parse(graph).expect("static URL"),
            partner_center: Url::parse(pc).expect("static URL"),
            graph_resource: graph.to_string(),
            partner_center_resource: pc_resource.to_string(),
        })
    }

    /// Endpoints at custom base URLs (a local emulator, a test double, a proxy).
    ///
    /// The audiences stay those of the global cloud: a stand-in for Microsoft's endpoints still
    /// serves the resources `https://graph.microsoft.com` and `https://api.partnercenter.microsoft.com`.
    pub fn from_urls(
        cloud: Cloud,
        authority: &str,
        graph: &str,
        partner_center: &str,
    ) -> Result<Endpoints, UserError> {
        Ok(Endpoints {
            cloud,
            authority: parse_base(authority, ENV_AUTHORITY)?,
            graph: parse_base(graph, ENV_GRAPH)?,
            partner_center: parse_base(partner_center, ENV_PARTNER_CENTER)?,
            graph_resource: GLOBAL_GRAPH.to_string(),
            partner_center_resource: GLOBAL_PC.to_string(),
        })
    }

    /// `--cloud custom`: the three base URLs from the environment.
    pub fn custom_from_env() -> Result<Endpoints, UserError> {
        let get = |name: &str| {
            std::env::var(name).map_err(|_| {
                UserError::usage(format!("--cloud custom needs {name}"))
                    .hint(format!("set {ENV_AUTHORITY}, {ENV_GRAPH} and {ENV_PARTNER_CENTER} (for example to the URLs `csp-onboard emulator` prints)"))
            })
        };
        Endpoints::from_urls(
            Cloud::Custom,
            &get(ENV_AUTHORITY)?,
            &get(ENV_GRAPH)?,
            &get(ENV_PARTNER_CENTER)?,
        )
    }

    /// `https://graph.microsoft.com/.default`
    pub fn graph_scope(&self) -> String {
        format!("{}/.default", self.graph_resource)
    }

    /// `https://api.partnercenter.microsoft.com/.default`
    pub fn partner_center_scope(&self) -> String {
        format!("{}/.default", self.partner_center_resource)
    }

    /// A URL under one of the bases: `join(&self.graph, "v1.0/me")`.
    pub fn join(base: &Url, path: &str) -> Url {
        let mut s = base.as_str().trim_end_matches('/').to_string();
        s.push('/');
        s.push_str(path.trim_start_matches('/'));
        Url::parse(&s).expect("a valid base URL joined with a valid path")
    }
}

/// Parse a base URL and refuse plain `http://` unless the host is loopback.
pub fn parse_base(raw: &str, what: &str) -> Result<Url, UserError> {
    let url = Url::parse(raw.trim()).map_err(|e| {
        UserError::usage(format!("{what} is not a valid URL ({e}): {raw}"))
            .hint("give a base URL such as https://login.microsoftonline.com")
    })?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(UserError::usage(format!(
                "{what} uses plain http:// for a host that is not loopback: {raw}"
            ))
            .hint("use https://, or http:// only with 127.0.0.1, ::1 or localhost"));
        }
        other => {
            return Err(UserError::usage(format!(
                "{what} has an unsupported scheme {other}://: {raw}"
            ))
            .hint("use https://"));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(UserError::usage(format!(
            "{what} must be a base URL without query or fragment: {raw}"
        )));
    }
    Ok(url)
}

/// 127.0.0.0/8, ::1 and `localhost` (but not `localhost.example.com`).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_for_loopback() {
        for ok in [
            "http://127.0.0.1:8400",
            "http://127.5.6.7",
            "http://[::1]:9000",
            "http://localhost:1",
            "https://example.com",
        ] {
            assert!(parse_base(ok, "X").is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com",
            "http://10.0.0.1:80",
            "http://localhost.evil.com",
            "http://[::2]",
            "ftp://127.0.0.1",
            "not a url",
        ] {
            let e = parse_base(bad, "X").unwrap_err();
            assert_eq!(e.exit, crate::exit::Exit::Usage, "{bad}");
        }
    }

    #[test]
    fn china_uses_its_own_partner_center_audience() {
        let e = Endpoints::public(Cloud::China).unwrap();
        assert_eq!(
            e.partner_center_scope(),
            "https://partner.partnercenterapi.microsoftonline.cn/.default"
        );
        let g = Endpoints::public(Cloud::Usgov).unwrap();
        assert_eq!(g.graph_scope(), "https://graph.microsoft.us/.default");
        assert_eq!(
            g.partner_center_scope(),
            "https://api.partnercenter.microsoft.com/.default"
        );
    }

    #[test]
    fn join_keeps_base_path() {
        let base = Url::parse("http://127.0.0.1:9/graph").unwrap();
        assert_eq!(
            Endpoints::join(&base, "/v1.0/me").as_str(),
            "http://127.0.0.1:9/graph/v1.0/me"
        );
    }
}
