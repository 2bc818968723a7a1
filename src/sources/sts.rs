//! A minimal AWS STS client: `GetSessionToken`, `GetFederationToken`, `AssumeRole`,
//! `AssumeRoleWithWebIdentity` and `GetCallerIdentity` over the query protocol (form-encoded POST, `Version=2011-06-15`),
//! signed with `aws-sigv4` for service `sts`.
//!
//! Errors never carry secrets: not the keys, not the session or web identity token, not the
//! request body (which may hold an MFA code or a web identity token), not a response body.
//! AWS error messages are shown only after any secret they echo has been redacted.

use std::time::SystemTime;

use aws_credential_types::Credentials as AwsCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use quick_xml::events::Event;
use zeroize::Zeroizing;

use crate::credentials::{Credentials, Secret, parse_timestamp};
use crate::session_policy::SessionPolicy;
use crate::sources::endpoint::ServiceEndpoint;
use crate::sources::http::{
    BodyError, Failure, GaveUp, HttpConfig, LazyClient, MAX_RESPONSE_BYTES,
    describe_transport_error, read_body, retryable_status, sanitize_message, with_retries,
};

const API_VERSION: &str = "2011-06-15";
const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// Error codes that mean "slow down" (retried, and reported as [`StsError::Throttled`]).
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "PriorRequestNotComplete",
    "SlowDown",
];

/// Why an STS call failed. No variant's message contains secret material.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    /// No HTTP response: connection refused, DNS failure, TLS failure or timeout.
    #[error("STS at {endpoint} is unreachable: {reason}")]
    Unreachable {
        /// The endpoint URL.
        endpoint: String,
        /// What went wrong, e.g. `connection failed: Connection refused (os error 111)`.
        reason: String,
    },
    /// STS answered with an AWS error document.
    #[error("STS returned HTTP {status} {code}: {message}")]
    Service {
        /// The AWS error code, e.g. `AccessDenied`, `ExpiredToken`.
        code: String,
        /// The AWS error message, sanitized.
        message: String,
        /// The HTTP status.
        status: u16,
    },
    /// STS kept throttling the request through every attempt.
    #[error("STS at {endpoint} throttled the request ({code}) on all {attempts} attempts")]
    Throttled {
        /// The endpoint URL.
        endpoint: String,
        /// The throttling error code (or `HTTP 429`).
        code: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// STS answered 2xx with something that is not the expected document.
    #[error("STS returned a malformed response: {reason}")]
    Malformed {
        /// What is wrong, naming elements only, never their content.
        reason: String,
    },
    /// The endpoint URL cannot be used.
    #[error("STS endpoint {endpoint} is not a valid URL: {reason}")]
    InvalidEndpoint {
        /// The endpoint URL.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The request could not be signed or the HTTP client could not be built.
    #[error("cannot prepare the STS request: {reason}")]
    Client {
        /// What went wrong.
        reason: String,
    },
}

/// Parameters of `AssumeRole`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssumeRoleRequest {
    /// The role to assume.
    pub role_arn: String,
    /// `RoleSessionName`.
    pub session_name: String,
    /// `ExternalId`, when the role's trust policy requires one.
    pub external_id: Option<String>,
    /// `DurationSeconds`; STS's default (3600) when `None`.
    pub duration_seconds: Option<u32>,
    /// `(SerialNumber, TokenCode)` of an MFA device.
    pub mfa: Option<(String, String)>,
    /// `SourceIdentity`.
    pub source_identity: Option<String>,
    /// `Policy` and `PolicyArns`: the session policy scoping the session down.
    pub policy: Option<std::sync::Arc<SessionPolicy>>,
}

/// The result of `GetCallerIdentity`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The 12-digit account id.
    pub account: String,
    /// The caller's ARN.
    pub arn: String,
    /// The caller's unique id (`AIDA...`, or `AROA...:session` for a role session).
    pub user_id: String,
}

/// An STS client. Cheap to clone; clones share one connection pool.
#[derive(Clone, Debug)]
pub struct StsClient {
    http: LazyClient,
    config: HttpConfig,
}

impl StsClient {
    /// Builds a client with the given timeouts and retry policy
    /// ([`HttpConfig::default`]: connect 2 s, request 5 s, 3 attempts).
    pub fn new(config: HttpConfig) -> Result<Self, StsError> {
        let http = LazyClient::new(&config);
        Ok(StsClient { http, config })
    }

    /// The timeouts and retry policy in use.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// `GetSessionToken` with `creds` (long-term keys), optionally with MFA
    /// (`mfa = (serial, code)`). The result has no account id: STS does not return one.
    pub async fn get_session_token(
        &self,
        ep: &ServiceEndpoint,
        creds: &Credentials,
        duration_seconds: Option<u32>,
        mfa: Option<(&str, &str)>,
    ) -> Result<Credentials, StsError> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(d) = duration_seconds {
            params.push(("DurationSeconds", d.to_string()));
        }
        if let Some((serial, code)) = mfa {
            params.push(("SerialNumber", serial.to_string()));
            params.push(("TokenCode", code.to_string()));
        }
        let body = self
            .call(ep, "GetSessionToken", &params, Some(creds))
            .await?;
        parse_credentials_response(&body, "GetSessionTokenResult", None)
    }

    /// `GetFederationToken` with `creds` (long-term keys): a session named `name`, scoped
    /// down by `policy` (without one, STS grants such a session nothing). The account id
    /// is taken from the federated user's ARN.
    pub async fn get_federation_token(
        &self,
        ep: &ServiceEndpoint,
        creds: &Credentials,
        name: &str,
        duration_seconds: Option<u32>,
        policy: &SessionPolicy,
    ) -> Result<Credentials, StsError> {
        let mut params: Vec<(&str, String)> = vec![("Name", name.to_string())];
        if let Some(d) = duration_seconds {
            params.push(("DurationSeconds", d.to_string()));
        }
        let keys = policy_arn_keys(Some(policy));
        push_policy(&mut params, Some(policy), &keys);
        let body = self
            .call(ep, "GetFederationToken", &params, Some(creds))
            .await?;
        parse_credentials_response(&body, "GetFederationTokenResult", Some("FederatedUser"))
    }

    /// `AssumeRole` with `creds`. The result's account id is taken from the assumed-role ARN.
    pub async fn assume_role(
        &self,
        ep: &ServiceEndpoint,
        creds: &Credentials,
        req: &AssumeRoleRequest,
    ) -> Result<Credentials, StsError> {
        let mut params: Vec<(&str, String)> = vec![
            ("RoleArn", req.role_arn.clone()),
            ("RoleSessionName", req.session_name.clone()),
        ];
        if let Some(id) = &req.external_id {
            params.push(("ExternalId", id.clone()));
        }
        if let Some(d) = req.duration_seconds {
            params.push(("DurationSeconds", d.to_string()));
        }
        if let Some((serial, code)) = &req.mfa {
            params.push(("SerialNumber", serial.clone()));
            params.push(("TokenCode", code.clone()));
        }
        if let Some(si) = &req.source_identity {
            params.push(("SourceIdentity", si.clone()));
        }
        let keys = policy_arn_keys(req.policy.as_deref());
        push_policy(&mut params, req.policy.as_deref(), &keys);
        let body = self.call(ep, "AssumeRole", &params, Some(creds)).await?;
        parse_credentials_response(&body, "AssumeRoleResult", Some("AssumedRoleUser"))
    }

    /// `AssumeRoleWithWebIdentity` (an unsigned request: the token is the authentication),
    /// scoped down by `policy` when given.
    pub async fn assume_role_with_web_identity(
        &self,
        ep: &ServiceEndpoint,
        role_arn: &str,
        session_name: &str,
        web_identity_token: &Secret,
        duration_seconds: Option<u32>,
        policy: Option<&SessionPolicy>,
    ) -> Result<Credentials, StsError> {
        let mut params: Vec<(&str, String)> = vec![
            ("RoleArn", role_arn.to_string()),
            ("RoleSessionName", session_name.to_string()),
            ("WebIdentityToken", web_identity_token.expose().to_string()),
        ];
        if let Some(d) = duration_seconds {
            params.push(("DurationSeconds", d.to_string()));
        }
        let keys = policy_arn_keys(policy);
        push_policy(&mut params, policy, &keys);
        let result = self
            .call_with_secrets(
                ep,
                "AssumeRoleWithWebIdentity",
                &params,
                None,
                &[web_identity_token.expose()],
            )
            .await;
        // The token copy in `params` is not zeroized by String; overwrite it ourselves.
        for (_, v) in params.iter_mut() {
            zeroize::Zeroize::zeroize(v);
        }
        parse_credentials_response(
            &result?,
            "AssumeRoleWithWebIdentityResult",
            Some("AssumedRoleUser"),
        )
    }

    /// `GetCallerIdentity` with `creds`.
    pub async fn get_caller_identity(
        &self,
        ep: &ServiceEndpoint,
        creds: &Credentials,
    ) -> Result<CallerIdentity, StsError> {
        let body = self.call(ep, "GetCallerIdentity", &[], Some(creds)).await?;
        parse_caller_identity(&body)
    }

    async fn call(
        &self,
        ep: &ServiceEndpoint,
        action: &str,
        params: &[(&str, String)],
        creds: Option<&Credentials>,
    ) -> Result<Zeroizing<String>, StsError> {
        self.call_with_secrets(ep, action, params, creds, &[]).await
    }

    /// Sends one query-protocol call with retries and returns the 2xx body.
    async fn call_with_secrets(
        &self,
        ep: &ServiceEndpoint,
        action: &str,
        params: &[(&str, String)],
        creds: Option<&Credentials>,
        extra_secrets: &[&str],
    ) -> Result<Zeroizing<String>, StsError> {
        let url = normalize_url(&ep.url)?;
        // Built in a block: the serializer is not `Send` and must not live across an await.
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", action);
            form.append_pair("Version", API_VERSION);
            for (k, v) in params {
                form.append_pair(k, v);
            }
            Zeroizing::new(form.finish())
        };

        let mut secrets: Vec<&str> = extra_secrets.to_vec();
        if let Some(c) = creds {
            secrets.push(c.secret_access_key.expose());
            if let Some(t) = &c.session_token {
                secrets.push(t.expose());
            }
        }
        for (k, v) in params {
            if matches!(*k, "TokenCode" | "WebIdentityToken") {
                secrets.push(v);
            }
        }

        let sent = with_retries(&self.config, |attempt| {
            self.attempt(ep, &url, action, creds, &body, &secrets, attempt)
        })
        .await;
        match sent {
            Ok(text) => Ok(text),
            Err(GaveUp::Fatal(e)) => Err(e),
            Err(GaveUp::Exhausted(e, attempts)) => Err(match e {
                StsError::Service { code, status, .. }
                    if status == 429 || THROTTLING_CODES.contains(&code.as_str()) =>
                {
                    StsError::Throttled {
                        endpoint: ep.url.clone(),
                        code,
                        attempts,
                    }
                }
                other => other,
            }),
        }
    }

    /// One attempt: sign, send, read, and classify the outcome.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        ep: &ServiceEndpoint,
        url: &reqwest::Url,
        action: &str,
        creds: Option<&Credentials>,
        body: &str,
        secrets: &[&str],
        attempt: u32,
    ) -> Result<Zeroizing<String>, Failure<StsError>> {
        let cfg = &self.config;
        let unreachable = |e: &reqwest::Error| {
            let t = describe_transport_error(e, cfg);
            tracing::debug!(attempt, action, endpoint = %url, reason = %t.reason, "STS request failed");
            let err = StsError::Unreachable {
                endpoint: ep.url.clone(),
                reason: t.reason,
            };
            if t.retryable {
                Failure::Retry(err)
            } else {
                Failure::Fatal(err)
            }
        };
        let mut builder = self
            .http
            .get()
            .map_err(|reason| Failure::Fatal(StsError::Client { reason }))?
            .post(url.as_str())
            .header(reqwest::header::CONTENT_TYPE, FORM_CONTENT_TYPE);
        if let Some(c) = creds {
            let headers = sign_request(url.as_str(), &ep.signing_region, c, body.as_bytes())
                .map_err(Failure::Fatal)?;
            for (name, value) in headers {
                builder = builder.header(name, value.as_str());
            }
        }
        let resp = builder
            .body(body.as_bytes().to_vec())
            .send()
            .await
            .map_err(|e| unreachable(&e))?;
        let status = resp.status().as_u16();
        let bytes = match read_body(resp, MAX_RESPONSE_BYTES).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                return Err(Failure::Fatal(StsError::Malformed {
                    reason: format!("response body larger than {MAX_RESPONSE_BYTES} bytes"),
                }));
            }
            Err(BodyError::Transport(e)) => return Err(unreachable(&e)),
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Err(Failure::Fatal(StsError::Malformed {
                reason: format!("HTTP {status} response is not UTF-8"),
            }));
        };
        let text = Zeroizing::new(text.to_string());
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let err = parse_error_response(&text, status, secrets);
        let throttled = status == 429
            || matches!(&err, StsError::Service { code, .. } if THROTTLING_CODES.contains(&code.as_str()));
        if throttled || retryable_status(status) {
            Err(Failure::Retry(err))
        } else {
            Err(Failure::Fatal(err))
        }
    }
}

/// The query keys of a policy's ARNs: `PolicyArns.member.N.arn`, N from 1.
fn policy_arn_keys(policy: Option<&SessionPolicy>) -> Vec<String> {
    (1..=policy.map_or(0, |p| p.arns.len()))
        .map(|n| format!("PolicyArns.member.{n}.arn"))
        .collect()
}

/// Adds `Policy` and `PolicyArns.member.N.arn` (keys from [`policy_arn_keys`]) to `params`.
fn push_policy<'k>(
    params: &mut Vec<(&'k str, String)>,
    policy: Option<&SessionPolicy>,
    keys: &'k [String],
) {
    let Some(policy) = policy else { return };
    if let Some(doc) = &policy.document {
        params.push(("Policy", doc.clone()));
    }
    for (key, arn) in keys.iter().zip(&policy.arns) {
        params.push((key.as_str(), arn.clone()));
    }
}

/// Parses and normalizes an endpoint URL (`https://host` becomes `https://host/`), so the
/// signed URI and the sent URI are the same string.
fn normalize_url(url: &str) -> Result<reqwest::Url, StsError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| StsError::InvalidEndpoint {
        endpoint: url.to_string(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(StsError::InvalidEndpoint {
            endpoint: url.to_string(),
            reason: "expected an http(s) URL with a host".to_string(),
        });
    }
    Ok(parsed)
}

/// SigV4-signs a form POST for service `sts`; returns the headers to add.
fn sign_request(
    url: &str,
    signing_region: &str,
    creds: &Credentials,
    body: &[u8],
) -> Result<Vec<(&'static str, String)>, StsError> {
    let identity = AwsCredentials::new(
        creds.access_key_id.clone(),
        creds.secret_access_key.expose().to_string(),
        creds.session_token.as_ref().map(|t| t.expose().to_string()),
        None,
        "credport",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(signing_region)
        .name("sts")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| StsError::Client {
            reason: format!("signing parameters: {e}"),
        })?
        .into();
    let headers = [("content-type", FORM_CONTENT_TYPE)];
    let signable =
        SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(body)).map_err(
            |_| StsError::Client {
                reason: "the request cannot be signed (invalid URI or header)".to_string(),
            },
        )?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|_| StsError::Client {
            reason: "SigV4 signing failed".to_string(),
        })?
        .into_parts();
    let (headers, _query) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| (h.name(), h.value().to_string()))
        .collect())
}

/// Text of selected elements of an XML document, keyed by their path below the root element
/// (e.g. `AssumeRoleResult/Credentials/AccessKeyId`). Values are zeroized on drop.
struct XmlFields {
    found: Vec<(String, Zeroizing<String>)>,
}

impl XmlFields {
    /// Extracts the text of the elements at `paths`. Errors name a byte offset only.
    fn parse(xml: &str, paths: &[&str]) -> Result<(String, XmlFields), String> {
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut stack: Vec<String> = Vec::new();
        let mut root = String::new();
        let mut found: Vec<(String, Zeroizing<String>)> = Vec::new();
        let mut current: Option<(String, Zeroizing<String>)> = None;
        let bad = |r: &quick_xml::Reader<&[u8]>| {
            format!("not well-formed XML (near byte {})", r.buffer_position())
        };
        loop {
            let ev = match reader.read_event() {
                Ok(ev) => ev,
                Err(_) => return Err(bad(&reader)),
            };
            match ev {
                Event::Start(e) => {
                    let name = e.local_name().as_ref().to_string();
                    if stack.is_empty() && root.is_empty() {
                        root = name.clone();
                    }
                    stack.push(name);
                    let path = stack[1.min(stack.len())..].join("/");
                    if paths.contains(&path.as_str()) {
                        current = Some((path, Zeroizing::new(String::new())));
                    }
                }
                Event::Empty(e) => {
                    let name = e.local_name().as_ref().to_string();
                    if stack.is_empty() && root.is_empty() {
                        root = name.clone();
                    }
                    let mut p = stack[1.min(stack.len())..].to_vec();
                    p.push(name);
                    let path = p.join("/");
                    if paths.contains(&path.as_str()) {
                        found.push((path, Zeroizing::new(String::new())));
                    }
                }
                Event::End(_) => {
                    let path = stack[1.min(stack.len())..].join("/");
                    if let Some((p, v)) = current.take() {
                        if p == path {
                            found.push((p, v));
                        } else {
                            current = Some((p, v));
                        }
                    }
                    stack.pop();
                }
                Event::Text(t) => {
                    if let Some((_, v)) = current.as_mut() {
                        v.push_str(&t.xml10_content());
                    }
                }
                Event::CData(t) => {
                    if let Some((_, v)) = current.as_mut() {
                        v.push_str(&t.into_inner());
                    }
                }
                Event::GeneralRef(r) => {
                    if let Some((_, v)) = current.as_mut() {
                        match r.resolve_char_ref() {
                            Ok(Some(c)) => v.push(c),
                            Ok(None) => {
                                let name = r.xml10_content();
                                match quick_xml::escape::resolve_predefined_entity(&name) {
                                    Some(s) => v.push_str(s),
                                    None => return Err(bad(&reader)),
                                }
                            }
                            Err(_) => return Err(bad(&reader)),
                        }
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if root.is_empty() {
            return Err("empty document".to_string());
        }
        Ok((root, XmlFields { found }))
    }

    fn get(&self, path: &str) -> Option<&str> {
        self.found
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, v)| v.trim())
    }

    fn require(&self, path: &str) -> Result<&str, StsError> {
        match self.get(path) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(StsError::Malformed {
                reason: format!("missing <{path}>"),
            }),
        }
    }
}

/// Parses the result of `GetSessionToken`, `GetFederationToken`, `AssumeRole` or
/// `AssumeRoleWithWebIdentity`; `user` names the element whose `Arn` holds the account id
/// (`AssumedRoleUser`, `FederatedUser`), if the result has one.
fn parse_credentials_response(
    xml: &str,
    result: &str,
    user: Option<&str>,
) -> Result<Credentials, StsError> {
    let akid = format!("{result}/Credentials/AccessKeyId");
    let secret = format!("{result}/Credentials/SecretAccessKey");
    let token = format!("{result}/Credentials/SessionToken");
    let exp = format!("{result}/Credentials/Expiration");
    let arn = format!("{result}/{}/Arn", user.unwrap_or("AssumedRoleUser"));
    let (_, fields) = XmlFields::parse(xml, &[&akid, &secret, &token, &exp, &arn])
        .map_err(|reason| StsError::Malformed { reason })?;
    let expiration_text = fields.require(&exp)?;
    let expiration = parse_timestamp(expiration_text).ok_or_else(|| StsError::Malformed {
        reason: format!("<{exp}> is not an ISO 8601 timestamp"),
    })?;
    let account_id = if user.is_some() {
        let arn_text = fields.require(&arn)?;
        Some(
            account_from_arn(arn_text).ok_or_else(|| StsError::Malformed {
                reason: format!("<{arn}> has no account id"),
            })?,
        )
    } else {
        None
    };
    Ok(Credentials {
        access_key_id: fields.require(&akid)?.to_string(),
        secret_access_key: Secret::new(fields.require(&secret)?),
        session_token: Some(Secret::new(fields.require(&token)?)),
        expiration: Some(expiration),
        account_id,
    })
}

/// Parses the result of `GetCallerIdentity`.
fn parse_caller_identity(xml: &str) -> Result<CallerIdentity, StsError> {
    let p = [
        "GetCallerIdentityResult/Account",
        "GetCallerIdentityResult/Arn",
        "GetCallerIdentityResult/UserId",
    ];
    let (_, fields) = XmlFields::parse(xml, &p).map_err(|reason| StsError::Malformed { reason })?;
    Ok(CallerIdentity {
        account: fields.require(p[0])?.to_string(),
        arn: fields.require(p[1])?.to_string(),
        user_id: fields.require(p[2])?.to_string(),
    })
}

/// Turns a non-2xx body into [`StsError::Service`] (or [`StsError::Malformed`] when it is not
/// an AWS error document). The message is sanitized against `secrets`.
fn parse_error_response(xml: &str, status: u16, secrets: &[&str]) -> StsError {
    let p = ["Error/Code", "Error/Message"];
    match XmlFields::parse(xml, &p) {
        Ok((root, fields)) if root == "ErrorResponse" || root == "Response" => {
            // `<Response><Errors><Error>` is the EC2-style variant some emulators use.
            let code = fields.get(p[0]).unwrap_or_default();
            let code = if code.is_empty() {
                format!("HTTP{status}")
            } else {
                sanitize_message(code, secrets)
            };
            let message = sanitize_message(fields.get(p[1]).unwrap_or_default(), secrets);
            StsError::Service {
                code,
                message,
                status,
            }
        }
        _ => StsError::Service {
            code: format!("HTTP{status}"),
            message: "the response is not an AWS error document".to_string(),
            status,
        },
    }
}

/// The account id (fifth field) of an ARN such as `arn:aws:sts::111111111111:assumed-role/R/s`.
pub fn account_from_arn(arn: &str) -> Option<String> {
    let account = arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
        .then(|| account.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const ASSUME_ROLE_OK: &str = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <SourceIdentity>Alice</SourceIdentity>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::111111111111:assumed-role/Dev/TestAR</Arn>
      <AssumedRoleId>ARO123EXAMPLE123:TestAR</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <SessionToken>
       AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQW
      </SessionToken>
      <Expiration>2019-11-09T13:34:41Z</Expiration>
    </Credentials>
    <PackedPolicySize>6</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata>
    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
  </ResponseMetadata>
</AssumeRoleResponse>"#;

    #[test]
    fn parses_assume_role() {
        let c =
            parse_credentials_response(ASSUME_ROLE_OK, "AssumeRoleResult", Some("AssumedRoleUser"))
                .unwrap();
        assert_eq!(c.access_key_id, "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(
            c.secret_access_key.expose(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
        );
        assert_eq!(
            c.session_token.as_ref().unwrap().expose(),
            "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQW"
        );
        assert_eq!(c.expiration, Some(datetime!(2019-11-09 13:34:41 UTC)));
        assert_eq!(c.account_id.as_deref(), Some("111111111111"));
    }

    #[test]
    fn parses_session_token_with_millis_and_entities() {
        let xml = r#"<?xml version="1.0"?><GetSessionTokenResponse><GetSessionTokenResult><Credentials>
<SessionToken>a&amp;b&#x2F;c</SessionToken><SecretAccessKey><![CDATA[s<k]]></SecretAccessKey>
<Expiration>2026-11-27T10:00:00.123Z</Expiration><AccessKeyId>ASIAX</AccessKeyId>
</Credentials></GetSessionTokenResult></GetSessionTokenResponse>"#;
        let c = parse_credentials_response(xml, "GetSessionTokenResult", None).unwrap();
        assert_eq!(c.session_token.unwrap().expose(), "a&b/c");
        assert_eq!(c.secret_access_key.expose(), "s<k");
        assert_eq!(c.account_id, None);
        assert_eq!(
            c.expiration.unwrap().unix_timestamp(),
            datetime!(2026-11-27 10:00:00 UTC).unix_timestamp()
        );
    }

    #[test]
    fn malformed_responses_never_echo_content() {
        let missing = ASSUME_ROLE_OK
            .replace("<SessionToken>", "<Other>")
            .replace("</SessionToken>", "</Other>");
        let e = parse_credentials_response(&missing, "AssumeRoleResult", Some("AssumedRoleUser"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "STS returned a malformed response: missing <AssumeRoleResult/Credentials/SessionToken>"
        );
        let truncated = &ASSUME_ROLE_OK[..ASSUME_ROLE_OK.find("</SecretAccessKey>").unwrap()];
        let e = parse_credentials_response(truncated, "AssumeRoleResult", Some("AssumedRoleUser"))
            .unwrap_err();
        let msg = e.to_string();
        assert!(!msg.contains("wJalr") && !msg.contains("ASIA"), "{msg}");
        let garbage = "<a><b>SECRETSECRET</c></a>";
        let msg = parse_credentials_response(garbage, "X", None)
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("SECRETSECRET"), "{msg}");
        assert!(msg.contains("not well-formed XML"), "{msg}");
        let bad_exp = ASSUME_ROLE_OK.replace("2019-11-09T13:34:41Z", "soon");
        let msg = parse_credentials_response(&bad_exp, "AssumeRoleResult", Some("AssumedRoleUser"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("not an ISO 8601") && !msg.contains("soon"),
            "{msg}"
        );
    }

    #[test]
    fn parses_caller_identity() {
        let xml = r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:iam::123456789012:user/Alice</Arn>
    <UserId>AIDACKCEVSQ6C2EXAMPLE</UserId>
    <Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"#;
        let id = parse_caller_identity(xml).unwrap();
        assert_eq!(id.account, "123456789012");
        assert_eq!(id.arn, "arn:aws:iam::123456789012:user/Alice");
        assert_eq!(id.user_id, "AIDACKCEVSQ6C2EXAMPLE");
    }

    #[test]
    fn parses_error_documents() {
        let xml = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>AccessDenied</Code>
    <Message>User: arn:aws:iam::123456789012:user/a is not authorized to perform: sts:AssumeRole on &quot;x&quot;</Message>
  </Error>
  <RequestId>4c9a2e8c-0000</RequestId>
</ErrorResponse>"#;
        match parse_error_response(xml, 403, &[]) {
            StsError::Service {
                code,
                message,
                status,
            } => {
                assert_eq!(code, "AccessDenied");
                assert_eq!(status, 403);
                assert!(message.ends_with("on \"x\""), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let throttle = "<ErrorResponse><Error><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>";
        let e = parse_error_response(throttle, 400, &[]);
        assert!(matches!(&e, StsError::Service { code, .. } if code == "Throttling"));

        // A message that echoes a secret is scrubbed.
        let echo = "<ErrorResponse><Error><Code>InvalidClientTokenId</Code><Message>token SESSIONTOKEN123 is bad</Message></Error></ErrorResponse>";
        let msg = parse_error_response(echo, 403, &["SESSIONTOKEN123"]).to_string();
        assert_eq!(
            msg,
            "STS returned HTTP 403 InvalidClientTokenId: token <redacted> is bad"
        );

        // Not an error document: the body is not shown at all.
        let e = parse_error_response("<html>secret page</html>", 502, &[]).to_string();
        assert_eq!(
            e,
            "STS returned HTTP 502 HTTP502: the response is not an AWS error document"
        );
    }

    #[test]
    fn policies_become_query_parameters() {
        let spec = crate::session_policy::PolicySpec {
            policy: Some("{\"Statement\": []}".into()),
            policy_arns: vec![
                "arn:aws:iam::aws:policy/ReadOnlyAccess".into(),
                "arn:aws:iam::123456789012:policy/Deploy".into(),
            ],
        };
        let policy = SessionPolicy::load(&spec, std::path::Path::new("/"), "t")
            .unwrap()
            .unwrap();
        let keys = policy_arn_keys(Some(&policy));
        let mut params: Vec<(&str, String)> = vec![("RoleArn", "r".into())];
        push_policy(&mut params, Some(&policy), &keys);
        assert_eq!(
            params,
            vec![
                ("RoleArn", "r".to_string()),
                ("Policy", "{\"Statement\":[]}".to_string()),
                (
                    "PolicyArns.member.1.arn",
                    "arn:aws:iam::aws:policy/ReadOnlyAccess".to_string()
                ),
                (
                    "PolicyArns.member.2.arn",
                    "arn:aws:iam::123456789012:policy/Deploy".to_string()
                ),
            ]
        );
        let no_keys = policy_arn_keys(None);
        let mut none: Vec<(&str, String)> = Vec::new();
        push_policy(&mut none, None, &no_keys);
        assert!(none.is_empty());
    }

    #[test]
    fn parses_federation_token() {
        let xml = r#"<GetFederationTokenResponse><GetFederationTokenResult><Credentials>
<SessionToken>tok</SessionToken><SecretAccessKey>sk</SecretAccessKey>
<Expiration>2026-11-27T10:00:00Z</Expiration><AccessKeyId>ASIAF</AccessKeyId></Credentials>
<FederatedUser><FederatedUserId>123456789012:credport-x</FederatedUserId>
<Arn>arn:aws:sts::123456789012:federated-user/credport-x</Arn></FederatedUser>
<PackedPolicySize>6</PackedPolicySize></GetFederationTokenResult></GetFederationTokenResponse>"#;
        let c = parse_credentials_response(xml, "GetFederationTokenResult", Some("FederatedUser"))
            .unwrap();
        assert_eq!(c.account_id.as_deref(), Some("123456789012"));
        assert_eq!(c.access_key_id, "ASIAF");
    }

    #[test]
    fn account_ids_from_arns() {
        assert_eq!(
            account_from_arn("arn:aws:sts::111111111111:assumed-role/Dev/s").as_deref(),
            Some("111111111111")
        );
        assert_eq!(account_from_arn("arn:aws:sts::x:assumed-role/Dev/s"), None);
        assert_eq!(account_from_arn("nonsense"), None);
    }

    #[test]
    fn signing_produces_sigv4_headers() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: Some(Secret::new("tok")),
            expiration: None,
            account_id: None,
        };
        let h = sign_request(
            "https://sts.eu-west-1.amazonaws.com/",
            "eu-west-1",
            &creds,
            b"Action=GetCallerIdentity&Version=2011-06-15",
        )
        .unwrap();
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        let auth = get("authorization").unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(auth.contains("/eu-west-1/sts/aws4_request"), "{auth}");
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"),
            "{auth}"
        );
        assert_eq!(get("x-amz-security-token").as_deref(), Some("tok"));
        assert!(get("x-amz-date").is_some());
    }

    #[test]
    fn invalid_endpoint_is_reported() {
        let e = normalize_url("not a url").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("STS endpoint not a url is not a valid URL"),
            "{e}"
        );
        assert_eq!(
            normalize_url("https://sts.amazonaws.com").unwrap().as_str(),
            "https://sts.amazonaws.com/"
        );
    }

    /// A fake STS answering from a script of `(status, body)`; the last entry repeats.
    async fn scripted(
        script: Vec<(u16, &'static str)>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use axum::http::StatusCode;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |body: String| {
                let n = c.fetch_add(1, Ordering::SeqCst);
                let (status, resp) = script[n.min(script.len() - 1)];
                assert!(body.contains("Action=GetCallerIdentity"), "{body}");
                async move { (StatusCode::from_u16(status).unwrap(), resp) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, calls)
    }

    const THROTTLE: &str = "<ErrorResponse><Error><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>";
    const DENIED: &str = "<ErrorResponse><Error><Code>AccessDenied</Code><Message>no</Message></Error></ErrorResponse>";
    const IDENTITY: &str = "<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/a</Arn><UserId>AIDA</UserId><Account>123456789012</Account></GetCallerIdentityResult></GetCallerIdentityResponse>";

    fn test_client() -> StsClient {
        StsClient::new(HttpConfig {
            base_backoff: std::time::Duration::from_millis(1),
            ..HttpConfig::default()
        })
        .unwrap()
    }

    fn test_creds() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("secret"),
            session_token: None,
            expiration: None,
            account_id: None,
        }
    }

    fn ep(url: &str) -> ServiceEndpoint {
        ServiceEndpoint {
            url: url.to_string(),
            region: "us-east-1".into(),
            signing_region: "us-east-1".into(),
        }
    }

    #[tokio::test]
    async fn retry_policy() {
        use std::sync::atomic::Ordering;
        let sts = test_client();

        // Throttling and 5xx are retried, then the call succeeds.
        let (url, calls) = scripted(vec![(400, THROTTLE), (503, ""), (200, IDENTITY)]).await;
        let id = sts
            .get_caller_identity(&ep(&url), &test_creds())
            .await
            .unwrap();
        assert_eq!(id.account, "123456789012");
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // Throttled on every attempt.
        let (url, calls) = scripted(vec![(400, THROTTLE)]).await;
        let e = sts
            .get_caller_identity(&ep(&url), &test_creds())
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(matches!(e, StsError::Throttled { attempts: 3, .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!("STS at {url} throttled the request (Throttling) on all 3 attempts")
        );

        // Other 4xx errors are final.
        let (url, calls) = scripted(vec![(403, DENIED), (200, IDENTITY)]).await;
        let e = sts
            .get_caller_identity(&ep(&url), &test_creds())
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(e.to_string(), "STS returned HTTP 403 AccessDenied: no");

        // Persistent 5xx ends as a service error after all attempts.
        let (url, calls) = scripted(vec![(500, "oops")]).await;
        let e = sts
            .get_caller_identity(&ep(&url), &test_creds())
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(matches!(e, StsError::Service { status: 500, .. }), "{e}");
    }
}
