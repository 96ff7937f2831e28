//! The SPDX 2.3 JSON document of a scan, shaped as syft's (what buildx's
//! `--sbom` attestation holds): a package for the image that the document
//! DESCRIBES and that CONTAINS every found package, each with its purl.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Package, SbomDocument};

/// What every absent SPDX value is written as.
const NOASSERTION: &str = "NOASSERTION";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: &'a str,
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<SpdxPackage<'a>>,
    relationships: Vec<Relationship>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreationInfo {
    license_list_version: &'static str,
    creators: Vec<String>,
    created: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpdxPackage<'a> {
    name: &'a str,
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<&'a str>,
    supplier: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    originator: Option<&'a str>,
    download_location: &'static str,
    files_analyzed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_info: Option<String>,
    license_concluded: &'static str,
    license_declared: &'a str,
    copyright_text: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_package_purpose: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef<'a> {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

impl SbomDocument {
    /// The document as an SPDX 2.3 JSON value.
    pub fn to_spdx_json(&self) -> serde_json::Value {
        let root_id = format!("SPDXRef-DocumentRoot-Image-{}", id_part(&self.name));
        let mut packages = vec![SpdxPackage {
            name: &self.name,
            spdx_id: root_id.clone(),
            version_info: None,
            supplier: NOASSERTION,
            originator: None,
            download_location: NOASSERTION,
            files_analyzed: false,
            source_info: None,
            license_concluded: NOASSERTION,
            license_declared: NOASSERTION,
            copyright_text: NOASSERTION,
            external_refs: Vec::new(),
            primary_package_purpose: Some("CONTAINER"),
        }];
        let mut relationships = vec![Relationship {
            spdx_element_id: "SPDXRef-DOCUMENT".into(),
            relationship_type: "DESCRIBES",
            related_spdx_element: root_id.clone(),
        }];
        for p in &self.packages {
            let id = package_id(p);
            relationships.push(Relationship {
                spdx_element_id: root_id.clone(),
                relationship_type: "CONTAINS",
                related_spdx_element: id.clone(),
            });
            packages.push(package(p, id));
        }
        let doc = Document {
            spdx_version: "SPDX-2.3",
            data_license: "CC0-1.0",
            spdx_id: "SPDXRef-DOCUMENT",
            name: &self.name,
            document_namespace: self.namespace(),
            creation_info: CreationInfo {
                license_list_version: spdx::license_version(),
                creators: vec![format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))],
                created: self.created.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            },
            packages,
            relationships,
        };
        serde_json::to_value(doc).expect("the SPDX document is plain JSON")
    }

    /// A namespace unique to the content (same image, same namespace: builds
    /// stay reproducible, unlike syft's random UUID).
    fn namespace(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        for p in &self.packages {
            h.update([0]);
            h.update(p.purl.as_bytes());
        }
        let hex = hex::encode(h.finalize());
        format!(
            "https://spdx.org/spdxdocs/kiln/{}-{}",
            id_part(&self.name),
            &hex[..32]
        )
    }
}

fn package(p: &Package, spdx_id: String) -> SpdxPackage<'_> {
    SpdxPackage {
        name: &p.name,
        spdx_id,
        version_info: Some(&p.version),
        supplier: p.supplier.as_deref().unwrap_or(NOASSERTION),
        originator: p.originator.as_deref(),
        download_location: NOASSERTION,
        files_analyzed: false,
        source_info: Some(format!(
            "acquired package info from {} metadata: {}",
            p.kind.purl_type(),
            p.locations.join(", ")
        )),
        license_concluded: NOASSERTION,
        license_declared: p.license.as_deref().unwrap_or(NOASSERTION),
        copyright_text: NOASSERTION,
        external_refs: vec![ExternalRef {
            reference_category: "PACKAGE-MANAGER",
            reference_type: "purl",
            reference_locator: &p.purl,
        }],
        primary_package_purpose: None,
    }
}

/// `SPDXRef-Package-TYPE-NAME-HASH`: readable, and unique per purl.
fn package_id(p: &Package) -> String {
    let digest = Sha256::digest(format!("{}\0{}\0{}", p.purl, p.name, p.version).as_bytes());
    format!(
        "SPDXRef-Package-{}-{}-{}",
        p.kind.purl_type(),
        id_part(&p.name),
        &hex::encode(digest)[..16]
    )
}

/// SPDX identifiers allow letters, digits, `.` and `-` only.
fn id_part(s: &str) -> String {
    let out: String = s
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() {
        "unnamed".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Package, PackageKind, SbomDocument};

    fn doc() -> SbomDocument {
        SbomDocument {
            name: "127.0.0.1:5000/app:latest".into(),
            created: jiff::Timestamp::from_second(0).unwrap(),
            distro: None,
            packages: vec![Package {
                kind: PackageKind::Npm,
                name: "@babel/code-frame".into(),
                version: "7.23.5".into(),
                purl: "pkg:npm/%40babel/code-frame@7.23.5".into(),
                license: Some("MIT".into()),
                supplier: None,
                originator: None,
                locations: vec!["/app/package-lock.json".into()],
            }],
            warnings: Vec::new(),
        }
    }

    #[test]
    fn document_shape() {
        let v = doc().to_spdx_json();
        assert_eq!(v["spdxVersion"], "SPDX-2.3");
        assert_eq!(v["creationInfo"]["created"], "1970-01-01T00:00:00Z");
        let pkg = &v["packages"][1];
        assert_eq!(
            pkg["externalRefs"][0]["referenceLocator"],
            "pkg:npm/%40babel/code-frame@7.23.5"
        );
        assert_eq!(pkg["licenseDeclared"], "MIT");
        let id = pkg["SPDXID"].as_str().unwrap();
        assert!(
            id.starts_with("SPDXRef-Package-npm--babel-code-frame-"),
            "{id}"
        );
        let rels = v["relationships"].as_array().unwrap();
        assert_eq!(rels[0]["relationshipType"], "DESCRIBES");
        assert_eq!(rels[1]["relatedSpdxElement"], id);
        // The same content gives the same namespace (reproducible builds).
        assert_eq!(
            v["documentNamespace"],
            doc().to_spdx_json()["documentNamespace"]
        );
    }
}
