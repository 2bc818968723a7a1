//! Endpoint resolution for STS, the SSO portal and SSO OIDC.
//!
//! The configured-endpoint precedence is botocore's (`botocore/configprovider.py`,
//! `ConfiguredEndpointProvider._ENDPOINT_URL_LOOKUP_ORDER`):
//!
//! 1. `AWS_ENDPOINT_URL_<SERVICE>` (`AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL_SSO`,
//!    `AWS_ENDPOINT_URL_SSO_OIDC`),
//! 2. `AWS_ENDPOINT_URL`,
//! 3. the service's `endpoint_url` in the profile's `[services X]` section,
//! 4. the profile's own `endpoint_url`,
//!
//! all of it ignored when `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`. Without a configured
//! endpoint, STS is regional (`https://sts.{region}.amazonaws.com`, the SDKs' default since
//! `sts_regional_endpoints` became `regional`), and global `https://sts.amazonaws.com` only
//! when no region is configured at all or the region is `aws-global`.
//!
//! Empty values (`AWS_REGION=`) count as unset, as they do in the SDKs.

/// Where to send requests for one service, and how to sign them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceEndpoint {
    /// Base URL, without a trailing `/` (e.g. `https://sts.eu-west-1.amazonaws.com`).
    pub url: String,
    /// The region the endpoint was resolved for (`aws-global` stays `aws-global`).
    pub region: String,
    /// The region to put in the SigV4 scope (`us-east-1` for the global endpoint).
    pub signing_region: String,
}

/// The region used when none is given or configured.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Resolves the STS endpoint.
///
/// `region` is the profile's `region` (or a caller override); `profile_endpoint_url` the
/// profile's `endpoint_url`; `services_sts_endpoint_url` the `sts` → `endpoint_url` of the
/// `[services X]` section the profile names; `env` looks up environment variables.
pub fn sts_endpoint(
    region: Option<&str>,
    profile_endpoint_url: Option<&str>,
    services_sts_endpoint_url: Option<&str>,
    env: &dyn crate::env::Env,
) -> ServiceEndpoint {
    let region = resolve_region(region, env);
    let configured = configured_endpoint_url(
        "AWS_ENDPOINT_URL_STS",
        profile_endpoint_url,
        services_sts_endpoint_url,
        env,
    );
    let (region, signing_region, default_url) = match region.as_deref() {
        None => (
            DEFAULT_REGION.to_string(),
            DEFAULT_REGION.to_string(),
            "https://sts.amazonaws.com".to_string(),
        ),
        Some("aws-global") => (
            "aws-global".to_string(),
            DEFAULT_REGION.to_string(),
            "https://sts.amazonaws.com".to_string(),
        ),
        Some(r) => (
            r.to_string(),
            r.to_string(),
            format!("https://sts.{r}.{}", dns_suffix(r)),
        ),
    };
    ServiceEndpoint {
        url: configured.unwrap_or(default_url),
        region,
        signing_region,
    }
}

/// Resolves the SSO portal endpoint (`GetRoleCredentials`) for `sso_region`:
/// `https://portal.sso.{region}.amazonaws.com` unless `AWS_ENDPOINT_URL_SSO` and friends say
/// otherwise.
pub fn sso_portal_endpoint(
    sso_region: &str,
    profile_endpoint_url: Option<&str>,
    services_sso_endpoint_url: Option<&str>,
    env: &dyn crate::env::Env,
) -> ServiceEndpoint {
    let configured = configured_endpoint_url(
        "AWS_ENDPOINT_URL_SSO",
        profile_endpoint_url,
        services_sso_endpoint_url,
        env,
    );
    ServiceEndpoint {
        url: configured.unwrap_or_else(|| {
            format!("https://portal.sso.{sso_region}.{}", dns_suffix(sso_region))
        }),
        region: sso_region.to_string(),
        signing_region: sso_region.to_string(),
    }
}

/// Resolves the SSO OIDC endpoint (`CreateToken`) for `sso_region`:
/// `https://oidc.{region}.amazonaws.com` unless `AWS_ENDPOINT_URL_SSO_OIDC` and friends say
/// otherwise.
pub fn sso_oidc_endpoint(
    sso_region: &str,
    profile_endpoint_url: Option<&str>,
    services_sso_oidc_endpoint_url: Option<&str>,
    env: &dyn crate::env::Env,
) -> ServiceEndpoint {
    let configured = configured_endpoint_url(
        "AWS_ENDPOINT_URL_SSO_OIDC",
        profile_endpoint_url,
        services_sso_oidc_endpoint_url,
        env,
    );
    ServiceEndpoint {
        url: configured
            .unwrap_or_else(|| format!("https://oidc.{sso_region}.{}", dns_suffix(sso_region))),
        region: sso_region.to_string(),
        signing_region: sso_region.to_string(),
    }
}

/// The region: `region` if given and non-empty, else `AWS_REGION`, else `AWS_DEFAULT_REGION`;
/// `None` when none of them is set.
pub fn resolve_region(region: Option<&str>, env: &dyn crate::env::Env) -> Option<String> {
    non_empty(region.map(str::to_string))
        .or_else(|| non_empty(env("AWS_REGION")))
        .or_else(|| non_empty(env("AWS_DEFAULT_REGION")))
}

/// The configured endpoint URL in botocore's order, or `None` when there is none or
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is `true`.
fn configured_endpoint_url(
    service_env_var: &str,
    profile_endpoint_url: Option<&str>,
    services_endpoint_url: Option<&str>,
    env: &dyn crate::env::Env,
) -> Option<String> {
    let ignore = env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if ignore {
        return None;
    }
    non_empty(env(service_env_var))
        .or_else(|| non_empty(env("AWS_ENDPOINT_URL")))
        .or_else(|| non_empty(services_endpoint_url.map(str::to_string)))
        .or_else(|| non_empty(profile_endpoint_url.map(str::to_string)))
        .map(|u| u.trim_end_matches('/').to_string())
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// The DNS suffix of the partition a region belongs to.
fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else if region.starts_with("us-isob-") {
        "sc2s.sgov.gov"
    } else if region.starts_with("us-iso-") {
        "c2s.ic.gov"
    } else {
        "amazonaws.com"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn regional_by_default() {
        let ep = sts_endpoint(Some("eu-west-1"), None, None, &env_of(&[]));
        assert_eq!(ep.url, "https://sts.eu-west-1.amazonaws.com");
        assert_eq!(ep.region, "eu-west-1");
        assert_eq!(ep.signing_region, "eu-west-1");
        let ep = sts_endpoint(Some("us-east-1"), None, None, &env_of(&[]));
        assert_eq!(ep.url, "https://sts.us-east-1.amazonaws.com");
    }

    #[test]
    fn global_only_without_region_or_for_aws_global() {
        let ep = sts_endpoint(None, None, None, &env_of(&[]));
        assert_eq!(ep.url, "https://sts.amazonaws.com");
        assert_eq!(ep.signing_region, "us-east-1");
        let ep = sts_endpoint(Some("aws-global"), None, None, &env_of(&[]));
        assert_eq!(ep.url, "https://sts.amazonaws.com");
        assert_eq!(ep.region, "aws-global");
        assert_eq!(ep.signing_region, "us-east-1");
        // An empty region counts as unset.
        let ep = sts_endpoint(Some(""), None, None, &env_of(&[("AWS_REGION", "")]));
        assert_eq!(ep.url, "https://sts.amazonaws.com");
    }

    #[test]
    fn china_and_iso_partitions() {
        let ep = sts_endpoint(Some("cn-north-1"), None, None, &env_of(&[]));
        assert_eq!(ep.url, "https://sts.cn-north-1.amazonaws.com.cn");
        let ep = sso_portal_endpoint("cn-northwest-1", None, None, &env_of(&[]));
        assert_eq!(ep.url, "https://portal.sso.cn-northwest-1.amazonaws.com.cn");
        let ep = sts_endpoint(Some("us-iso-east-1"), None, None, &env_of(&[]));
        assert_eq!(ep.url, "https://sts.us-iso-east-1.c2s.ic.gov");
    }

    #[test]
    fn region_precedence() {
        let env = env_of(&[
            ("AWS_REGION", "eu-west-2"),
            ("AWS_DEFAULT_REGION", "eu-west-3"),
        ]);
        assert_eq!(
            sts_endpoint(Some("ap-south-1"), None, None, &env).region,
            "ap-south-1"
        );
        assert_eq!(sts_endpoint(None, None, None, &env).region, "eu-west-2");
        let env = env_of(&[("AWS_DEFAULT_REGION", "eu-west-3")]);
        let ep = sts_endpoint(None, None, None, &env);
        assert_eq!(ep.url, "https://sts.eu-west-3.amazonaws.com");
    }

    #[test]
    fn endpoint_url_precedence() {
        let all = [
            ("AWS_ENDPOINT_URL_STS", "http://env-sts"),
            ("AWS_ENDPOINT_URL", "http://env-global"),
        ];
        let profile = Some("http://profile");
        let services = Some("http://services/");
        let r = Some("eu-west-1");

        let ep = sts_endpoint(r, profile, services, &env_of(&all));
        assert_eq!(ep.url, "http://env-sts");
        assert_eq!(ep.signing_region, "eu-west-1");
        let ep = sts_endpoint(r, profile, services, &env_of(&all[1..]));
        assert_eq!(ep.url, "http://env-global");
        let ep = sts_endpoint(r, profile, services, &env_of(&[]));
        assert_eq!(ep.url, "http://services", "trailing slash trimmed");
        let ep = sts_endpoint(r, profile, None, &env_of(&[]));
        assert_eq!(ep.url, "http://profile");

        // Ignored wholesale, case-insensitively.
        let mut ignore = all.to_vec();
        ignore.push(("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "TRUE"));
        let ep = sts_endpoint(r, profile, services, &env_of(&ignore));
        assert_eq!(ep.url, "https://sts.eu-west-1.amazonaws.com");
        // Anything but true does not ignore.
        let ep = sts_endpoint(
            r,
            profile,
            services,
            &env_of(&[("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "false")]),
        );
        assert_eq!(ep.url, "http://services");
        // A configured endpoint with no region signs for us-east-1.
        let ep = sts_endpoint(None, profile, None, &env_of(&[]));
        assert_eq!(ep.url, "http://profile");
        assert_eq!(ep.signing_region, "us-east-1");
    }

    #[test]
    fn sso_endpoints() {
        let ep = sso_portal_endpoint("eu-central-1", None, None, &env_of(&[]));
        assert_eq!(ep.url, "https://portal.sso.eu-central-1.amazonaws.com");
        let ep = sso_oidc_endpoint("eu-central-1", None, None, &env_of(&[]));
        assert_eq!(ep.url, "https://oidc.eu-central-1.amazonaws.com");

        let env = env_of(&[
            ("AWS_ENDPOINT_URL_SSO", "http://127.0.0.1:1/"),
            ("AWS_ENDPOINT_URL_SSO_OIDC", "http://127.0.0.1:2"),
            ("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:3"),
        ]);
        assert_eq!(
            sso_portal_endpoint("eu-central-1", None, None, &env).url,
            "http://127.0.0.1:1"
        );
        assert_eq!(
            sso_oidc_endpoint("eu-central-1", None, None, &env).url,
            "http://127.0.0.1:2"
        );
        let env = env_of(&[("AWS_ENDPOINT_URL", "http://all")]);
        assert_eq!(
            sso_oidc_endpoint("eu-central-1", None, None, &env).url,
            "http://all"
        );
        assert_eq!(
            sso_portal_endpoint(
                "eu-central-1",
                Some("http://p"),
                Some("http://s"),
                &env_of(&[])
            )
            .url,
            "http://s"
        );
    }
}
