//! The export and push shown as build steps, as buildx shows them: one
//! progress vertex per output (`exporting to image`, `exporting to oci image
//! format`, `exporting to client directory`, …) whose status items are the
//! export's phases (`exporting layers`, `exporting manifest sha256:…`,
//! `naming to …`, `pushing layers 3.2MB / 3.2MB`, `pushing manifest for …`),
//! instead of a silent pause after the last step.

use crate::export::spec::{OutputKind, OutputSpec};
use kiln_oci::Digest;
use kiln_registry::progress::{BlobStatus, Progress};
use kiln_solver::progress::{synthetic_digest, ProgressSender, StatusProgress, VertexProgress};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Byte counts are sent at most this often (the displays throttle again).
const BYTES_INTERVAL: Duration = Duration::from_millis(100);

/// buildx's name of the step that writes an output.
fn step_name(kind: OutputKind) -> Option<&'static str> {
    match kind {
        OutputKind::Image => Some("exporting to image"),
        OutputKind::Oci => Some("exporting to oci image format"),
        OutputKind::Docker => Some("exporting to docker image format"),
        OutputKind::Local => Some("exporting to client directory"),
        OutputKind::Tar => Some("exporting to client tarball"),
        OutputKind::CacheOnly => None,
    }
}

/// One output's step: registered with the display when it first has
/// something to show, so steps appear in the order they run.
#[derive(Debug)]
pub struct ExportStep {
    tx: ProgressSender,
    digest: kiln_solver::llb::VertexDigest,
    name: String,
    vertex: OnceLock<VertexProgress>,
}

impl ExportStep {
    /// The step `name`, numbered `index` (distinct steps of one name need distinct numbers).
    pub fn new(tx: &ProgressSender, index: usize, name: &'static str) -> ExportStep {
        Self::named(tx, &format!("export {index} {name}"), name.to_string())
    }

    /// The step `name`, its vertex identified by `id`.
    fn named(tx: &ProgressSender, id: &str, name: String) -> ExportStep {
        ExportStep {
            tx: tx.clone(),
            digest: synthetic_digest(id),
            name,
            vertex: OnceLock::new(),
        }
    }

    /// The step's vertex, started on first use.
    fn vertex(&self) -> &VertexProgress {
        self.vertex.get_or_init(|| {
            let v = self.tx.vertex(self.digest, self.name.as_str());
            v.start();
            v
        })
    }

    /// A phase of the step, shown as started now.
    pub fn item(&self, id: impl Into<String>) -> StepItem {
        let status = self.vertex().status(id);
        status.update(0, None);
        StepItem {
            status,
            bytes: 0,
            sent: Instant::now(),
        }
    }

    /// A phase that is over as soon as it is named (`naming to …`).
    pub fn done_item(&self, id: impl Into<String>) {
        self.vertex().status(id).complete(0, None);
    }

    /// The step succeeded.
    pub fn done(&self) {
        self.vertex().done();
    }

    /// A warning on the step (also in the summary at the end).
    pub fn warn(&self, message: String) {
        self.vertex().warn(kiln_solver::progress::Warning {
            level: 1,
            short: message,
            ..Default::default()
        });
    }

    /// The step failed with `message`.
    pub fn error(&self, message: &str) {
        self.vertex().error(message);
    }
}

/// One phase of a step, possibly counting bytes.
pub struct StepItem {
    status: StatusProgress,
    bytes: u64,
    sent: Instant,
}

impl StepItem {
    /// The phase is over.
    pub fn done(self) {
        self.status.complete(self.bytes, None);
    }
}

impl Write for StepItem {
    /// Counts the bytes written through (`sending tarball 12.3MB`).
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        if self.sent.elapsed() >= BYTES_INTERVAL {
            self.sent = Instant::now();
            self.status.update(self.bytes, None);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer that counts what passes through it into a [`StepItem`] (when
/// there is one: no step, no counting).
pub struct Counted<W> {
    inner: W,
    item: Option<StepItem>,
}

impl<W: Write> Counted<W> {
    /// Counts the bytes written to `inner` in `item`.
    pub fn new(inner: W, item: Option<StepItem>) -> Self {
        Counted { inner, item }
    }

    /// Ends the phase (writing is over) and gives the writer back.
    pub fn finish(self) -> W {
        if let Some(item) = self.item {
            item.done();
        }
        self.inner
    }
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(item) = &mut self.item {
            item.write_all(&buf[..n])?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Every output's step, in `--output` order (none for `cacheonly`).
#[derive(Debug, Default)]
pub struct ExportSteps {
    steps: Vec<Option<ExportStep>>,
}

impl ExportSteps {
    /// Starts one step per output of `outputs`; with a `target` (one of several built
    /// together: bake) the steps are its own and named with it (`[app] exporting to image`).
    pub fn start_for(
        tx: &ProgressSender,
        outputs: &[OutputSpec],
        target: Option<&str>,
    ) -> ExportSteps {
        let step = |i: usize, name: &'static str| match target {
            None => ExportStep::new(tx, i, name),
            Some(t) => ExportStep::named(
                tx,
                &format!("export {t} {i} {name}"),
                crate::progress::feed::prefixed_name(t, name),
            ),
        };
        ExportSteps {
            steps: outputs
                .iter()
                .enumerate()
                .map(|(i, o)| step_name(o.kind).map(|name| step(i, name)))
                .collect(),
        }
    }

    /// The step of output `index`.
    pub fn get(&self, index: usize) -> Option<&ExportStep> {
        self.steps.get(index).and_then(Option::as_ref)
    }

    /// The step that makes the image (layers, manifest, config): the first
    /// image, oci or docker output's.
    pub fn image_step(&self, outputs: &[OutputSpec]) -> Option<&ExportStep> {
        let index = outputs.iter().position(|o| {
            matches!(
                o.kind,
                OutputKind::Image | OutputKind::Oci | OutputKind::Docker
            )
        })?;
        self.get(index)
    }
}

/// `pushing layers` as a byte count over every blob of a push, from the
/// registry client's transfer events.
pub struct PushProgress {
    item: Mutex<PushState>,
}

struct PushState {
    item: StepItem,
    total: u64,
    /// Bytes counted per blob (so a blob the registry already has counts whole).
    blobs: HashMap<Digest, (u64, u64)>,
}

impl PushProgress {
    /// Counts into `item`.
    pub fn new(item: StepItem) -> Self {
        PushProgress {
            item: Mutex::new(PushState {
                item,
                total: 0,
                blobs: HashMap::new(),
            }),
        }
    }

    fn with(&self, f: impl FnOnce(&mut PushState)) {
        let mut state = self
            .item
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut state);
        let (bytes, total) = (state.item.bytes, state.total);
        if state.item.sent.elapsed() >= BYTES_INTERVAL {
            state.item.sent = Instant::now();
            state.item.status.update(bytes, Some(total));
        }
    }
}

impl Progress for PushProgress {
    fn start(&self, digest: &Digest, size: u64) {
        self.with(|s| {
            if s.blobs.insert(digest.clone(), (0, size)).is_none() {
                s.total += size;
            }
        });
    }

    fn advance(&self, digest: &Digest, n: u64) {
        self.with(|s| {
            if let Some((done, _)) = s.blobs.get_mut(digest) {
                *done += n;
                s.item.bytes += n;
            }
        });
    }

    fn done(&self, digest: &Digest, _status: BlobStatus) {
        self.with(|s| {
            if let Some((done, size)) = s.blobs.get_mut(digest) {
                s.item.bytes += size.saturating_sub(*done);
                *done = *size;
            }
        });
    }
}

impl PushProgress {
    /// Ends `pushing layers` with the final count.
    pub fn finish(self) {
        let state = self
            .item
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state
            .item
            .status
            .complete(state.item.bytes, Some(state.total));
    }
}
