//! TFRecord framing, the container format of TensorBoard event files.
//!
//! Each record is `len: u64 LE`, `masked_crc32c(len bytes): u32 LE`, `data`,
//! `masked_crc32c(data): u32 LE`, where the CRC is CRC-32C (Castagnoli) and the mask is
//! TensorFlow's: rotate right by 15 bits, then add `0xa282ead8` (wrapping).

use std::io::{self, Read, Write};

/// TensorFlow's constant added to the rotated CRC.
const MASK_DELTA: u32 = 0xa282_ead8;

/// The masked CRC-32C of `data`, as TFRecord stores it.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Writes one framed record (`data` is a serialized protobuf message).
pub fn write_record<W: Write>(out: &mut W, data: &[u8]) -> io::Result<()> {
    let len = (data.len() as u64).to_le_bytes();
    out.write_all(&len)?;
    out.write_all(&masked_crc32c(&len).to_le_bytes())?;
    out.write_all(data)?;
    out.write_all(&masked_crc32c(data).to_le_bytes())
}

/// Reads one framed record, checking both CRCs; `Ok(None)` at a clean end of input.
///
/// A CRC mismatch is an `InvalidData` error, a record cut short an `UnexpectedEof` error.
pub fn read_record<R: Read>(input: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 8];
    // Distinguish a clean end (no byte of a new record) from a truncated header.
    let mut got = 0;
    while got < len.len() {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut crc = [0u8; 4];
    input.read_exact(&mut crc)?;
    if u32::from_le_bytes(crc) != masked_crc32c(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "TFRecord length CRC mismatch",
        ));
    }
    let n = usize::try_from(u64::from_le_bytes(len))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "TFRecord length too large"))?;
    let mut data = Vec::new();
    input.take(n as u64).read_to_end(&mut data)?;
    if data.len() != n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    input.read_exact(&mut crc)?;
    if u32::from_le_bytes(crc) != masked_crc32c(&data) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "TFRecord data CRC mismatch",
        ));
    }
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRC-32C check value of "123456789" (the CRC catalogue's `check` for CRC-32/ISCSI).
    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    /// Masked values computed by hand from the check value (rotr 15 of 0xE3069283 is
    /// 0x2507C60D; plus 0xA282EAD8 is 0xC78AB0E5) and, for the others, with TensorBoard's own
    /// Python `masked_crc32c` (`tensorboard.compat.tensorflow_stub.pywrap_tensorflow`).
    #[test]
    fn masked_crc_known_vectors() {
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
        assert_eq!(masked_crc32c(b""), 0xA282_EAD8);
        assert_eq!(masked_crc32c(&9u64.to_le_bytes()), 0x3971_F937);
        assert_eq!(masked_crc32c(b"brain.Event:2"), 0x7C06_01EE);
    }

    #[test]
    fn record_layout() {
        let mut buf = Vec::new();
        write_record(&mut buf, b"123456789").unwrap();
        assert_eq!(buf.len(), 8 + 4 + 9 + 4);
        assert_eq!(&buf[..8], &[9, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&buf[8..12], &0x3971_F937u32.to_le_bytes());
        assert_eq!(&buf[12..21], b"123456789");
        assert_eq!(&buf[21..], &0xC78A_B0E5u32.to_le_bytes());
    }

    #[test]
    fn round_trip_and_corruption() {
        let mut buf = Vec::new();
        write_record(&mut buf, b"first").unwrap();
        write_record(&mut buf, b"").unwrap();
        let mut r = &buf[..];
        assert_eq!(read_record(&mut r).unwrap().as_deref(), Some(&b"first"[..]));
        assert_eq!(read_record(&mut r).unwrap().as_deref(), Some(&b""[..]));
        assert!(read_record(&mut r).unwrap().is_none());

        let mut bad = buf.clone();
        bad[13] ^= 1; // a data byte of the first record
        let err = read_record(&mut &bad[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let mut bad = buf.clone();
        bad[0] ^= 1; // the length
        let err = read_record(&mut &bad[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let err = read_record(&mut &buf[..20]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = read_record(&mut &buf[..3]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
