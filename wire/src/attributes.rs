//! User attributes (organisation, roles, jobs) and broadcast audiences over them.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// What a user is, for broadcasts: one organisation, any number of roles and jobs.
/// Values are identifiers from the company's system; numbers are accepted and kept as
/// their decimal text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Attributes {
    #[serde(default, deserialize_with = "opt_value")]
    #[schema(value_type = Option<AttributeValue>)]
    pub org: Option<String>,
    #[serde(default, deserialize_with = "value_list")]
    #[schema(value_type = Vec<AttributeValue>, max_items = 32)]
    pub roles: Vec<String>,
    #[serde(default, deserialize_with = "value_list")]
    #[schema(value_type = Vec<AttributeValue>, max_items = 32)]
    pub jobs: Vec<String>,
}

/// One attribute value: 1..64 of `[A-Za-z0-9_.-]` (a number is taken as its decimal
/// text).
#[derive(ToSchema)]
#[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
#[allow(dead_code)] // only its schema is used
pub struct AttributeValue(String);

/// Longest attribute value.
pub const MAX_ATTRIBUTE_LEN: usize = 64;
/// Most roles or jobs one user can have.
pub const MAX_ATTRIBUTE_VALUES: usize = 32;

#[derive(Deserialize)]
#[serde(untagged)]
enum RawValue {
    Text(String),
    Number(i64),
}

impl From<RawValue> for String {
    fn from(v: RawValue) -> String {
        match v {
            RawValue::Text(s) => s,
            RawValue::Number(n) => n.to_string(),
        }
    }
}

fn opt_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<RawValue>::deserialize(d)?.map(String::from))
}

fn value_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<RawValue>>::deserialize(d)?
        .unwrap_or_default()
        .into_iter()
        .map(String::from)
        .collect())
}

/// Whether an attribute value can stand in an audience path.
pub fn valid_attribute_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_ATTRIBUTE_LEN
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Attributes {
    /// Checks every value; the error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(org) = &self.org {
            if !valid_attribute_value(org) {
                return Err("org must be 1..64 of [A-Za-z0-9_.-]".into());
            }
        }
        for (name, list) in [("roles", &self.roles), ("jobs", &self.jobs)] {
            if list.len() > MAX_ATTRIBUTE_VALUES {
                return Err(format!("{name}: at most {MAX_ATTRIBUTE_VALUES} values"));
            }
            if list.iter().any(|v| !valid_attribute_value(v)) {
                return Err(format!(
                    "{name}: each value must be 1..64 of [A-Za-z0-9_.-]"
                ));
            }
        }
        Ok(())
    }

    /// Every audience this user belongs to, in canonical form. A broadcast conversation
    /// is visible to the user exactly when its audience is in this list.
    pub fn audiences(&self) -> Vec<AudienceKey> {
        let mut out = vec!["all".to_string()];
        for r in &self.roles {
            out.push(format!("role/{r}"));
        }
        for j in &self.jobs {
            out.push(format!("job/{j}"));
        }
        if let Some(o) = &self.org {
            out.push(format!("org/{o}"));
            for r in &self.roles {
                out.push(format!("org/{o}/role/{r}"));
            }
            for j in &self.jobs {
                out.push(format!("org/{o}/job/{j}"));
            }
        }
        out.sort();
        out.dedup();
        out.into_iter().map(AudienceKey).collect()
    }
}

/// The canonical path of a broadcast audience (`all`, `org/1/role/3`): the key its
/// conversation, its bus channel and its online members are kept by. Made only by
/// [`Audience::key`] and [`Attributes::audiences`], so it is always canonical.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, example = "org/1/role/3")]
pub struct AudienceKey(String);

impl AudienceKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key read back from storage or the bus, where only canonical keys are written.
    pub fn from_stored(path: String) -> AudienceKey {
        AudienceKey(path)
    }
}

impl std::fmt::Display for AudienceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why an audience path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudienceError {
    #[error("audience is empty")]
    Empty,
    #[error("audience must be `all` or key/value pairs such as org/1/role/3")]
    OddPath,
    #[error("unknown audience key {0:?} (expected org, role or job)")]
    UnknownKey(String),
    #[error("audience key {0:?} appears twice")]
    RepeatedKey(String),
    #[error("bad audience value {0:?}")]
    BadValue(String),
    #[error("an audience names a role or a job, not both")]
    RoleAndJob,
}

/// A parsed broadcast audience: a conjunction of at most one org, role and job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Audience {
    pub org: Option<String>,
    pub role: Option<String>,
    pub job: Option<String>,
}

impl Audience {
    /// Parses `all`, `org/1`, `role/3/org/1`, … in any order of pairs.
    pub fn parse(path: &str) -> Result<Audience, AudienceError> {
        let path = path.trim_matches('/');
        if path.is_empty() {
            return Err(AudienceError::Empty);
        }
        let mut a = Audience {
            org: None,
            role: None,
            job: None,
        };
        if path == "all" {
            return Ok(a);
        }
        let parts: Vec<&str> = path.split('/').collect();
        if !parts.len().is_multiple_of(2) {
            return Err(AudienceError::OddPath);
        }
        for pair in parts.chunks(2) {
            let (key, value) = (pair[0], pair[1]);
            if !valid_attribute_value(value) {
                return Err(AudienceError::BadValue(value.into()));
            }
            let slot = match key {
                "org" => &mut a.org,
                "role" => &mut a.role,
                "job" => &mut a.job,
                other => return Err(AudienceError::UnknownKey(other.into())),
            };
            if slot.is_some() {
                return Err(AudienceError::RepeatedKey(key.into()));
            }
            *slot = Some(value.to_string());
        }
        if a.role.is_some() && a.job.is_some() {
            // Keeps a user's audiences linear in roles + jobs (each is a subscription).
            return Err(AudienceError::RoleAndJob);
        }
        Ok(a)
    }

    /// The canonical key: pairs in the order org, role, job; `all` when empty.
    pub fn key(&self) -> AudienceKey {
        AudienceKey(self.canonical())
    }

    /// The canonical path: pairs in the order org, role, job; `all` when empty.
    pub fn canonical(&self) -> String {
        let mut parts = Vec::new();
        if let Some(o) = &self.org {
            parts.push(format!("org/{o}"));
        }
        if let Some(r) = &self.role {
            parts.push(format!("role/{r}"));
        }
        if let Some(j) = &self.job {
            parts.push(format!("job/{j}"));
        }
        if parts.is_empty() {
            "all".into()
        } else {
            parts.join("/")
        }
    }

    /// Whether a user with these attributes belongs to the audience.
    pub fn matches(&self, attrs: &Attributes) -> bool {
        self.org
            .as_ref()
            .is_none_or(|o| attrs.org.as_ref() == Some(o))
            && self.role.as_ref().is_none_or(|r| attrs.roles.contains(r))
            && self.job.as_ref().is_none_or(|j| attrs.jobs.contains(j))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> Attributes {
        Attributes {
            org: Some("1".into()),
            roles: vec!["3".into()],
            jobs: vec!["2".into(), "7".into()],
        }
    }

    #[test]
    fn parse_and_canonical() {
        assert_eq!(
            Audience::parse("all").map(|a| a.canonical()),
            Ok("all".into())
        );
        assert_eq!(
            Audience::parse("role/3/org/1").map(|a| a.canonical()),
            Ok("org/1/role/3".into())
        );
        assert!(Audience::parse("org").is_err());
        assert!(Audience::parse("team/1").is_err());
        assert!(Audience::parse("org/1/org/2").is_err());
        assert!(Audience::parse("").is_err());
        assert!(Audience::parse("org/a b").is_err());
        assert_eq!(
            Audience::parse("role/1/job/2"),
            Err(AudienceError::RoleAndJob)
        );
    }

    #[test]
    fn audiences_agree_with_matches() {
        let a = attrs();
        let list = a.audiences();
        for path in [
            "all",
            "org/1",
            "role/3",
            "job/2",
            "job/7",
            "org/1/role/3",
            "org/1/job/2",
            "org/1/job/7",
        ] {
            let aud = Audience::parse(path).expect("valid path");
            assert!(aud.matches(&a), "{path} should match");
            assert!(list.contains(&aud.key()), "{path} should be listed");
        }
        for path in ["org/2", "role/4", "org/2/role/3", "org/1/job/9"] {
            let aud = Audience::parse(path).expect("valid path");
            assert!(!aud.matches(&a), "{path} should not match");
            assert!(!list.contains(&aud.key()), "{path} should not be listed");
        }
    }

    #[test]
    fn numbers_become_text() {
        let a: Attributes =
            serde_json::from_str(r#"{"org": 1, "roles": [3, "x"]}"#).expect("parses");
        assert_eq!(a.org.as_deref(), Some("1"));
        assert_eq!(a.roles, vec!["3".to_string(), "x".to_string()]);
        assert!(a.jobs.is_empty());
    }
}
