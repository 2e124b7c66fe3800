//! Artifact <-> bytes: the header described in the module docs, then the postcard payload.

use super::{Artifact, ArtifactError, FORMAT_VERSION, validate};

/// The first four bytes of every artifact.
pub const MAGIC: [u8; 4] = *b"TSRA";

/// Bytes before the payload: magic, version, payload length, checksum.
pub const HEADER_BYTES: usize = 4 + 4 + 8 + 4;

/// The artifact as bytes: header, then payload. Deterministic: equal artifacts give equal bytes.
pub fn encode(artifact: &Artifact) -> Vec<u8> {
    // postcard fails only on types it cannot describe (sequences of unknown length, maps with
    // non-serialisable keys); the artifact types are plain derives with none of those.
    let payload = postcard::to_allocvec(artifact).expect("artifact types always serialise");
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Reads an artifact from bytes and [`validate`]s it.
///
/// Checks run from the outside in (magic, version, length, checksum, payload, meaning), so the
/// error names the first layer that is wrong. Nothing is allocated from a length the file
/// declares before that length has been checked against the bytes present.
pub fn decode(bytes: &[u8]) -> Result<Artifact, ArtifactError> {
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(ArtifactError::BadMagic {
            found: escape(&bytes[..magic_len]),
        });
    }
    // The version is read as soon as it is present so that a file of another format version is
    // named as such even if the rest of its header differs from ours.
    if let Some(version) = bytes.get(4..8) {
        let found = u32::from_le_bytes(le(version));
        if found != FORMAT_VERSION {
            return Err(ArtifactError::Version {
                found,
                supported: FORMAT_VERSION,
            });
        }
    }
    let Some(header) = bytes.get(..HEADER_BYTES) else {
        return Err(ArtifactError::Truncated {
            part: "header",
            needed: HEADER_BYTES as u64,
            available: bytes.len() as u64,
        });
    };
    let declared = u64::from_le_bytes(le(&header[8..16]));
    let stored = u32::from_le_bytes(le(&header[16..20]));
    let rest = &bytes[HEADER_BYTES..];
    let available = rest.len() as u64;
    if declared > available {
        return Err(ArtifactError::Truncated {
            part: "payload",
            needed: declared,
            available,
        });
    }
    if declared < available {
        return Err(ArtifactError::TrailingBytes {
            extra: available - declared,
            payload: declared,
        });
    }
    let payload = rest;
    let computed = crc32fast::hash(payload);
    if computed != stored {
        return Err(ArtifactError::Checksum { stored, computed });
    }
    // postcard never reserves more than the input could hold (serde caps its size hints, and
    // strings and bytes are bounded by the slice), so a forged length cannot exhaust memory.
    let (artifact, unused) = postcard::take_from_bytes::<Artifact>(payload)
        .map_err(|e| ArtifactError::Payload(e.to_string()))?;
    if !unused.is_empty() {
        return Err(ArtifactError::Payload(format!(
            "{} bytes left over after the artifact",
            unused.len()
        )));
    }
    validate(&artifact)?;
    Ok(artifact)
}

/// The fixed-size array in `bytes`, whose length the caller has already sliced to `N`.
fn le<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut a = [0; N];
    a.copy_from_slice(bytes);
    a
}

/// `b"PK\x03\x04"`-style text for the bytes a file starts with.
fn escape(bytes: &[u8]) -> String {
    let body: String = bytes
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.is_empty() {
        "nothing (the file is empty)".into()
    } else {
        format!("b\"{body}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_binary_starts() {
        assert_eq!(escape(b"PK\x03\x04"), "b\"PK\\x03\\x04\"");
        assert_eq!(escape(b""), "nothing (the file is empty)");
    }
}
