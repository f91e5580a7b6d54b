//! `moat system prune --images`: removes the images moat built from
//! `dependencies:` (`moat/run:*`, Docker only) that no live run uses and
//! that neither their build nor any run recorded in `MOAT_HOME` used within
//! the given number of days. Runs against the build lock, so no image is
//! removed while one is being built.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use moat_core::deps::IMAGE_REPOSITORY;
use moat_core::store::RunEntry;

use crate::api::images::{ImagePruneReport, ImagePruneRequest, JudgedImage};
use crate::state::Daemon;
use crate::supervisor::RunError;

/// What is known of one moat-built image.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Image {
    tag: String,
    /// Its build, then every recorded run that used it.
    last_used: Option<DateTime<Utc>>,
    live: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Remove,
    Keep(String),
}

pub async fn prune(daemon: &Daemon, request: &ImagePruneRequest) -> Result<ImagePruneReport, RunError> {
    let runtime = daemon.runtimes().get("docker").await?;
    let _no_build = crate::image_build::ONE_BUILD.lock().await;
    let built: BTreeMap<String, Option<DateTime<Utc>>> = runtime
        .list_images()
        .await?
        .into_iter()
        .flat_map(|image| {
            let created = image.created.and_then(|secs| Utc.timestamp_opt(secs, 0).single());
            image.tags.into_iter().map(move |tag| (tag, created))
        })
        .filter(|(tag, _)| is_moat_built(tag))
        .collect();
    let images = with_uses(daemon, built)?;
    let cutoff = Utc::now() - Duration::days(i64::from(request.older_than_days));
    let mut report = ImagePruneReport {
        dry_run: request.dry_run,
        ..ImagePruneReport::default()
    };
    for image in images {
        let mut judged = JudgedImage {
            tag: image.tag.clone(),
            last_used: image.last_used,
            reason: String::new(),
        };
        match judge(&image, cutoff) {
            Verdict::Keep(reason) => {
                judged.reason = reason;
                report.kept.push(judged);
            }
            Verdict::Remove if request.dry_run => report.removed.push(judged),
            Verdict::Remove => match runtime.remove_image(&image.tag).await {
                Ok(()) => report.removed.push(judged),
                Err(e) => {
                    judged.reason = e.to_string();
                    report.failed.push(judged);
                }
            },
        }
    }
    Ok(report)
}

fn is_moat_built(tag: &str) -> bool {
    tag.strip_prefix(IMAGE_REPOSITORY)
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|hash| !hash.is_empty())
}

/// Adds to each image the runs that used it: live ones from the registry,
/// the latest use from every run record (a run uses its image from its
/// creation to its exit).
fn with_uses(daemon: &Daemon, built: BTreeMap<String, Option<DateTime<Utc>>>) -> Result<Vec<Image>, RunError> {
    let live: BTreeSet<String> = daemon.registry().all().iter().map(|h| h.spec.image.clone()).collect();
    let mut last_used = built;
    for entry in daemon.store().list()? {
        let RunEntry::Readable(meta) = entry else { continue };
        if let Some(used) = last_used.get_mut(&meta.image) {
            let until = meta.exited_at.unwrap_or(meta.created_at).max(meta.created_at);
            *used = Some(used.map_or(until, |known| known.max(until)));
        }
    }
    Ok(last_used
        .into_iter()
        .map(|(tag, last_used)| Image {
            live: live.contains(&tag),
            tag,
            last_used,
        })
        .collect())
}

fn judge(image: &Image, cutoff: DateTime<Utc>) -> Verdict {
    if image.live {
        return Verdict::Keep("a live run uses it".into());
    }
    match image.last_used {
        Some(used) if used > cutoff => Verdict::Keep(format!("used {}", used.format("%Y-%m-%d %H:%M UTC"))),
        _ => Verdict::Remove,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(live: bool, days_ago: Option<i64>) -> Image {
        Image {
            tag: "moat/run:0123456789abcdef".into(),
            last_used: days_ago.map(|d| Utc::now() - Duration::days(d)),
            live,
        }
    }

    #[test]
    fn only_images_unused_for_the_period_and_not_live_go() {
        let cutoff = Utc::now() - Duration::days(30);
        assert_eq!(judge(&image(false, Some(31)), cutoff), Verdict::Remove);
        assert_eq!(judge(&image(false, None), cutoff), Verdict::Remove);
        assert!(matches!(judge(&image(false, Some(29)), cutoff), Verdict::Keep(_)));
        assert_eq!(
            judge(&image(true, Some(400)), cutoff),
            Verdict::Keep("a live run uses it".into())
        );
    }

    #[test]
    fn only_moat_built_tags_are_candidates() {
        assert!(is_moat_built("moat/run:0123456789abcdef"));
        for other in [
            "moat/run:",
            "moat-base:bookworm",
            "moat/runner:x",
            "debian:bookworm-slim",
        ] {
            assert!(!is_moat_built(other), "{other}");
        }
    }
}
