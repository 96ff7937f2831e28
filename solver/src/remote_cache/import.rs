//! Import: cache configs read from `--cache-from` sources, indexed by cache key, so the
//! worker answers lookups from them. Nothing is downloaded here: a record's layers are
//! fetched through a [`BlobFetcher`] when a step or an exporter needs their bytes.

use std::collections::{HashMap, HashSet};

use kiln_oci::{Descriptor, Digest};

use super::format::{CacheBlob, CacheConfig, SelectionChecksum};
use crate::cache::{CacheKey, ContentChecksum, KeyParts};

/// Brings an imported blob into the content store, verified against its descriptor
/// (the builder implements it over the registry client or a layout). Blocking.
pub trait BlobFetcher: Send + Sync {
    /// Fetches `desc` from import source `source` (its position in the `--cache-from` list).
    fn fetch(
        &self,
        source: usize,
        desc: &Descriptor,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// One imported record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRecord {
    /// The source it came from.
    pub source: usize,
    /// Its layers, bottom first: the blob and its diffID.
    pub layers: Vec<(Descriptor, Digest)>,
    /// The vertex description.
    pub description: String,
    /// Checksums of selected paths of the result.
    pub checksums: Vec<SelectionChecksum>,
    /// What its key was made of.
    pub parts: Option<KeyParts>,
    /// When it was made (seconds since the epoch), kept when it is stored here so a
    /// re-export of the same cache writes the same bytes.
    pub created_at: u64,
}

/// Every imported record, by key; with several sources the first source holding a key wins.
#[derive(Debug, Clone, Default)]
pub struct ImportedCache {
    records: HashMap<CacheKey, ImportedRecord>,
    /// Every record (of every source) by description, by inputs (JSON of the parts'
    /// inputs) and by op digest, in the order added: what a step that missed is compared
    /// with.
    by_description: HashMap<String, Vec<ImportedRecord>>,
    by_inputs: HashMap<String, Vec<ImportedRecord>>,
    by_op: HashMap<String, Vec<ImportedRecord>>,
    /// Checksums of selected paths by (the result's diffIDs, selectors digest).
    checksums: HashMap<(Vec<Digest>, String), ContentChecksum>,
    /// Cache-mount contents by id: the source and the blob.
    mounts: HashMap<String, (usize, CacheBlob)>,
    /// Every blob the sources list.
    blobs: HashSet<Digest>,
}

impl ImportedCache {
    /// Adds the records of source `source`.
    pub fn add(&mut self, source: usize, config: &CacheConfig) {
        let k = &config.kiln;
        self.blobs.extend(k.blobs.iter().map(|b| b.digest.clone()));
        for r in &k.records {
            // `CacheConfig::parse` checked the positions; a record naming one out of range
            // (a config made by hand) is left out rather than trusted.
            let Some(layers) = r
                .layers
                .iter()
                .map(|i| {
                    k.blobs
                        .get(*i)
                        .map(|b| (blob_descriptor(b), b.diff_id.clone()))
                })
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            let record = ImportedRecord {
                source,
                layers,
                description: r.description.clone(),
                checksums: r.checksums.clone(),
                parts: r.parts.clone(),
                created_at: r.created_at,
            };
            let diff_ids: Vec<Digest> = record.layers.iter().map(|(_, d)| d.clone()).collect();
            for c in &r.checksums {
                self.checksums
                    .entry((diff_ids.clone(), c.selectors.clone()))
                    .or_insert(c.checksum);
            }
            self.by_description
                .entry(record.description.clone())
                .or_default()
                .push(record.clone());
            if let Some(p) = &record.parts {
                if let Some(inputs) = inputs_index(p) {
                    self.by_inputs
                        .entry(inputs)
                        .or_default()
                        .push(record.clone());
                }
                self.by_op
                    .entry(p.op.clone())
                    .or_default()
                    .push(record.clone());
            }
            self.records.entry(r.key).or_insert(record);
        }
        for m in &k.mounts {
            if let Some(b) = k.blobs.get(m.blob) {
                self.mounts
                    .entry(m.id.clone())
                    .or_insert((source, b.clone()));
            }
        }
    }

    /// The record under `key`.
    pub fn lookup(&self, key: &CacheKey) -> Option<&ImportedRecord> {
        self.records.get(key)
    }

    /// Whether nothing was imported.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.mounts.is_empty()
    }

    /// The imported records a step that missed is compared with (every source's): those
    /// described `description`, then those on the same inputs as `parts` (the same place
    /// in the build: a RUN whose command changed is described otherwise), then those of
    /// the same op.
    pub fn candidates(&self, description: &str, parts: &KeyParts) -> Vec<&ImportedRecord> {
        let by_inputs = inputs_index(parts).and_then(|i| self.by_inputs.get(&i));
        list(self.by_description.get(description))
            .iter()
            .chain(list(by_inputs))
            .chain(list(self.by_op.get(&parts.op)))
            .collect()
    }

    /// The checksum of the paths `selectors` (a [`super::format::selectors_digest`]) select
    /// in the result made of the layers `diff_ids`, if a source recorded it.
    pub fn checksum(&self, diff_ids: &[Digest], selectors: &str) -> Option<ContentChecksum> {
        self.checksums
            .get(&(diff_ids.to_vec(), selectors.to_string()))
            .copied()
    }

    /// The contents of cache mount `id`: the source holding it and its blob.
    pub fn mount(&self, id: &str) -> Option<(usize, &CacheBlob)> {
        self.mounts.get(id).map(|(s, b)| (*s, b))
    }

    /// Every blob digest the sources list (layers and cache mounts).
    pub fn blobs(&self) -> &HashSet<Digest> {
        &self.blobs
    }
}

/// The records of a list, none when it is absent.
fn list(v: Option<&Vec<ImportedRecord>>) -> &[ImportedRecord] {
    v.map_or(&[], Vec::as_slice)
}

/// The index of a record by what its inputs contribute; none for a step without inputs
/// (every source would share it).
fn inputs_index(parts: &KeyParts) -> Option<String> {
    (!parts.inputs.is_empty()).then(|| serde_json::to_string(&parts.inputs).unwrap_or_default())
}

/// The descriptor of a cache blob (its diffID annotated as BuildKit's cache annotates it),
/// as the cache image lists it and as it is fetched.
pub fn blob_descriptor(b: &CacheBlob) -> Descriptor {
    Descriptor::new(&b.media_type, b.digest.clone(), b.size).with_annotation(
        kiln_oci::media_type::ANNOTATION_UNCOMPRESSED,
        b.diff_id.as_ref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_cache::format::tests::blob;
    use crate::remote_cache::format::{CacheMountRecord, CacheRecord, KilnCache, FORMAT_VERSION};

    fn config(records: Vec<(u8, Vec<usize>, &str)>, checksum: Option<u8>) -> CacheConfig {
        CacheConfig::new(KilnCache {
            version: FORMAT_VERSION,
            blobs: vec![blob(1), blob(2)],
            records: records
                .into_iter()
                .map(|(k, layers, d)| CacheRecord {
                    key: CacheKey([k; 32]),
                    layers,
                    description: d.into(),
                    created_at: u64::from(k),
                    checksums: checksum
                        .map(|c| SelectionChecksum {
                            selectors: "sel".into(),
                            checksum: ContentChecksum([c; 32]),
                        })
                        .into_iter()
                        .collect(),
                    parts: None,
                })
                .collect(),
            mounts: vec![CacheMountRecord {
                id: "go".into(),
                blob: 1,
            }],
        })
    }

    #[test]
    fn the_first_source_holding_a_key_wins_and_every_record_is_kept_for_explanations() {
        let mut c = ImportedCache::default();
        assert!(c.is_empty());
        c.add(0, &config(vec![(1, vec![0], "RUN a")], Some(7)));
        c.add(
            1,
            &config(
                vec![(1, vec![0, 1], "RUN a"), (2, vec![1], "RUN b")],
                Some(8),
            ),
        );
        let r = c.lookup(&CacheKey([1; 32])).unwrap();
        assert_eq!((r.source, r.layers.len(), r.created_at), (0, 1, 1));
        assert_eq!(r.layers[0].0.digest, Digest::of(&[1]));
        assert_eq!(r.layers[0].1, Digest::of(&[1, 1]));
        assert_eq!(c.lookup(&CacheKey([2; 32])).unwrap().source, 1);
        assert!(c.lookup(&CacheKey([3; 32])).is_none());
        let parts = KeyParts {
            op: "op".into(),
            args: None,
            env: None,
            pin: None,
            inputs: vec![],
        };
        assert_eq!(c.candidates("RUN a", &parts).len(), 2);
        assert_eq!(c.candidates("RUN z", &parts).len(), 0);
        assert_eq!(
            c.checksum(&[Digest::of(&[1, 1])], "sel"),
            Some(ContentChecksum([7; 32]))
        );
        assert_eq!(c.checksum(&[Digest::of(&[1, 1])], "other"), None);
        let (source, b) = c.mount("go").unwrap();
        assert_eq!((source, &b.digest), (0, &Digest::of(&[2])));
        assert!(c.blobs().contains(&Digest::of(&[2])));
        assert!(!c.is_empty());
    }
}
