//! How moat's names and labels become valid Kubernetes names and labels:
//! object names are DNS labels (`run_0a1b` becomes `run-0a1b`), label keys
//! and values have their own alphabet; what does not fit is kept in an
//! annotation so nothing is lost on the way back.

use std::collections::BTreeMap;

/// Annotation holding the name moat gave an object (before [`object_name`]).
pub const NAME_ANNOTATION: &str = "dev.moat/name";
/// Annotation holding every label moat gave an object, as JSON.
pub const LABELS_ANNOTATION: &str = "dev.moat/labels";
/// Pod label naming the NetworkPolicy (moat's network) the pod is on.
pub const NETWORK_LABEL: &str = "dev.moat.network";
/// Label of the pods of the in-cluster proxy, the only egress of strict runs.
pub const PROXY_POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "moat-proxy");

/// A moat name as a Kubernetes object name (lowercase, `_` and `.` become
/// `-`); idempotent, so calls may pass either form.
pub fn object_name(name: &str) -> String {
    name.trim_start_matches('/')
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .collect()
}

/// The per-run ConfigMap that owns every other object of the run.
pub fn anchor_name(run_id: &str) -> String {
    format!("{}-meta", object_name(run_id))
}

/// The Secret holding a container's read-only files.
pub fn files_secret_name(container: &str) -> String {
    format!("{}-files", object_name(container))
}

/// Whether `key=value` is a valid Kubernetes label (name part up to 63
/// characters of `[A-Za-z0-9._-]`, starting and ending alphanumeric,
/// optionally prefixed by `dns.subdomain/`; value the same or empty).
pub fn is_valid_label(key: &str, value: &str) -> bool {
    let name = key.rsplit_once('/').map_or(key, |(prefix, name)| {
        if prefix.is_empty() || prefix.len() > 253 {
            ""
        } else {
            name
        }
    });
    !name.is_empty() && is_label_segment(name) && (value.is_empty() || is_label_segment(value))
}

fn is_label_segment(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The labels Kubernetes accepts, and the annotations that keep the full
/// set (and the original name) for [`restore`].
pub fn split_labels(
    name: &str,
    labels: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let valid = labels
        .iter()
        .filter(|(k, v)| is_valid_label(k, v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut annotations = BTreeMap::from([(NAME_ANNOTATION.to_string(), name.to_string())]);
    if let Ok(all) = serde_json::to_string(labels) {
        annotations.insert(LABELS_ANNOTATION.to_string(), all);
    }
    (valid, annotations)
}

/// The name and labels moat gave an object, from its metadata.
pub fn restore(
    object: &str,
    labels: Option<&BTreeMap<String, String>>,
    annotations: Option<&BTreeMap<String, String>>,
) -> (String, BTreeMap<String, String>) {
    let name = annotations
        .and_then(|a| a.get(NAME_ANNOTATION))
        .cloned()
        .unwrap_or_else(|| object.to_string());
    let mut all = labels.cloned().unwrap_or_default();
    all.remove(NETWORK_LABEL);
    if let Some(saved) = annotations
        .and_then(|a| a.get(LABELS_ANNOTATION))
        .and_then(|json| serde_json::from_str::<BTreeMap<String, String>>(json).ok())
    {
        all.extend(saved);
    }
    (name, all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_become_dns_labels_idempotently() {
        assert_eq!(object_name("run_0123456789ab"), "run-0123456789ab");
        assert_eq!(object_name("moat-run_0123456789ab"), "moat-run-0123456789ab");
        assert_eq!(object_name(&object_name("Run_X.y")), "run-x-y");
        assert_eq!(anchor_name("run_ab"), "run-ab-meta");
    }

    #[test]
    fn label_validity_follows_kubernetes_rules() {
        assert!(is_valid_label("dev.moat.run-id", "run_0123456789ab"));
        assert!(is_valid_label("app.kubernetes.io/name", "moat-proxy"));
        assert!(is_valid_label("team", ""));
        assert!(!is_valid_label("has space", "x"));
        assert!(!is_valid_label("k", "ends-"));
        assert!(!is_valid_label("k", &"x".repeat(64)));
    }

    #[test]
    fn labels_that_do_not_fit_survive_in_annotations() {
        let labels = BTreeMap::from([
            ("dev.moat.role".to_string(), "main".to_string()),
            ("note".to_string(), "two words".to_string()),
        ]);
        let (valid, annotations) = split_labels("run_1", &labels);
        assert_eq!(valid.len(), 1);
        let (name, back) = restore("run-1", Some(&valid), Some(&annotations));
        assert_eq!((name.as_str(), back), ("run_1", labels));
    }
}
