//! Blobs downloaded in parallel and read as they arrive: each download feeds a bounded channel,
//! a blocking thread inflates and parses it line by line into its own totals, and the totals of a
//! blob count only once the whole blob has been read. Memory stays flat whatever the export size.

use super::lineitem::LineItem;
use super::output::RawRow;
use super::{Aggregate, GroupBy};
use crate::partner_center::billing::{BillingError, BlobRef, Manifest, open_blob};
use crate::partner_center::{ApiError, HttpClient, Service};
use bytes::Bytes;
use std::io::{BufRead, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::mpsc;

/// Chunks in flight per download: enough to keep the parser busy, small enough to stay flat.
const CHANNEL_CHUNKS: usize = 16;
/// Raw line items are handed to the writer in batches of this many.
pub const RAW_BATCH: usize = 8192;

/// Where `--out --raw` line items go (a writer thread on the other end).
pub type RawSender = std::sync::mpsc::SyncSender<Vec<RawRow>>;

#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub blobs_done: usize,
    pub blobs: usize,
    pub compressed_bytes: u64,
}

pub struct ExportData {
    pub aggregate: Aggregate,
    pub compressed_bytes: u64,
    pub blobs: usize,
}

/// A `Read` over the chunks a download task sends.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

fn corrupt(blob: &str, detail: impl Into<String>) -> BillingError {
    BillingError::Corrupt {
        blob: blob.to_string(),
        detail: detail.into(),
    }
}

fn gzip_error(blob: &str, e: &std::io::Error) -> BillingError {
    corrupt(
        blob,
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "the gzip data ends early".to_string(),
            _ => format!("not valid gzip data: {e}"),
        },
    )
}

struct RawBatch {
    tx: Option<RawSender>,
    rows: Vec<RawRow>,
}

impl RawBatch {
    fn push(&mut self, item: &LineItem) {
        if self.tx.is_some() {
            self.rows.push(RawRow::from(item));
            if self.rows.len() >= RAW_BATCH {
                self.flush();
            }
        }
    }
    fn flush(&mut self) {
        if let Some(tx) = &self.tx
            && !self.rows.is_empty()
        {
            // A closed writer reports its own error when it is joined.
            let _ = tx.send(std::mem::take(&mut self.rows));
        }
    }
}

/// Inflate and parse one blob (JSON lines, or one JSON array for `compressedJSON` read literally).
fn parse_blob(
    reader: impl Read,
    blob: &str,
    by: GroupBy,
    raw: Option<RawSender>,
) -> Result<Aggregate, BillingError> {
    let gz = flate2::read::MultiGzDecoder::new(reader);
    let mut r = std::io::BufReader::with_capacity(256 << 10, gz);
    let mut agg = Aggregate::new(by);
    let mut raw = RawBatch {
        tx: raw,
        rows: Vec::new(),
    };
    let first = loop {
        let buf = r.fill_buf().map_err(|e| gzip_error(blob, &e))?;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let b = buf[i];
                r.consume(i);
                break Some(b);
            }
            None if buf.is_empty() => break None,
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    };
    if first == Some(b'[') {
        parse_array(r, blob, &mut agg, &mut raw)?;
    } else {
        // Lines are parsed where they lie in the inflate buffer; only a line that straddles two
        // buffer fills is copied.
        let mut carry: Vec<u8> = Vec::new();
        let mut number = 0u64;
        let mut one = |line: &[u8], number: u64| -> Result<(), BillingError> {
            if line.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            let item = LineItem::parse(line).map_err(|e| {
                corrupt(
                    blob,
                    format!(
                        "line {number} is not a usage line item ({:?} error at column {})",
                        e.classify(),
                        e.column()
                    ),
                )
            })?;
            agg.add(&item)
                .map_err(|e| corrupt(blob, format!("line {number}: {e}")))?;
            raw.push(&item);
            Ok(())
        };
        loop {
            let buf = r.fill_buf().map_err(|e| gzip_error(blob, &e))?;
            if buf.is_empty() {
                if !carry.is_empty() {
                    number += 1;
                    one(&carry, number)?;
                }
                break;
            }
            let n = buf.len();
            let mut start = 0;
            while let Some(pos) = memchr::memchr(b'\n', &buf[start..]) {
                let end = start + pos;
                number += 1;
                if carry.is_empty() {
                    one(&buf[start..end], number)?;
                } else {
                    carry.extend_from_slice(&buf[start..end]);
                    one(&carry, number)?;
                    carry.clear();
                }
                start = end + 1;
            }
            carry.extend_from_slice(&buf[start..]);
            r.consume(n);
        }
    }
    raw.flush();
    Ok(agg)
}

/// A blob holding one JSON array of line items (`compressedJSON` taken literally), read element by
/// element: a small scanner finds each top-level object, which is then parsed like a line.
fn parse_array(
    mut r: impl BufRead,
    blob: &str,
    agg: &mut Aggregate,
    raw: &mut RawBatch,
) -> Result<(), BillingError> {
    let mut element = Vec::with_capacity(4096);
    let (mut depth, mut in_string, mut escaped, mut closed) = (0u32, false, false, false);
    let mut number = 0u64;
    loop {
        let buf = r.fill_buf().map_err(|e| gzip_error(blob, &e))?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        for &c in buf {
            if closed {
                if !c.is_ascii_whitespace() {
                    return Err(corrupt(blob, "data after the JSON array"));
                }
                continue;
            }
            if depth >= 2 {
                element.push(c);
            }
            if in_string {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth == 2 {
                        element.clear();
                        element.push(c);
                    }
                }
                b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 1 && c == b'}' {
                        number += 1;
                        let item = LineItem::parse(&element).map_err(|e| {
                            corrupt(
                                blob,
                                format!(
                                    "item {number} is not a usage line item ({:?} error)",
                                    e.classify()
                                ),
                            )
                        })?;
                        agg.add(&item)
                            .map_err(|e| corrupt(blob, format!("item {number}: {e}")))?;
                        raw.push(&item);
                    }
                    if depth == 0 {
                        closed = true;
                    }
                }
                _ => {}
            }
        }
        r.consume(n);
    }
    if !closed {
        return Err(corrupt(blob, "the JSON array ends early"));
    }
    Ok(())
}

/// Download one blob and total it. The totals are returned only when every byte arrived and
/// every line parsed; any failure discards them.
async fn one_blob(
    http: &HttpClient,
    manifest: &Manifest,
    blob: &BlobRef,
    by: GroupBy,
    raw: Option<RawSender>,
    bytes: &AtomicU64,
) -> Result<Aggregate, BillingError> {
    let mut resp = open_blob(http, manifest, blob).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let name = blob.name.clone();
    let parser = tokio::task::spawn_blocking(move || {
        parse_blob(
            ChannelReader {
                rx,
                current: Bytes::new(),
            },
            &name,
            by,
            raw,
        )
    });
    let mut network = None;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if tx.send(chunk).await.is_err() {
                    // The parser stopped early: its error says why.
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                network = Some(ApiError::from_reqwest(Service::Graph, &e));
                break;
            }
        }
    }
    drop(tx);
    let parsed = parser
        .await
        .map_err(|e| corrupt(&blob.name, format!("the reader stopped: {e}")))?;
    match network {
        // A broken download looks like truncated gzip to the parser; say what really happened.
        Some(e) => Err(e.into()),
        None => parsed,
    }
}

/// Every blob of the manifest, `parallel` at a time, into one set of totals. The first failure
/// stops the rest: no partial total is ever returned.
pub async fn aggregate(
    http: &HttpClient,
    manifest: Manifest,
    by: GroupBy,
    raw: Option<RawSender>,
    parallel: usize,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
) -> Result<ExportData, BillingError> {
    let manifest = Arc::new(manifest);
    let blobs = manifest.blobs.len();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..parallel.clamp(1, blobs.max(1)) {
        let (http, manifest, next, done, bytes, raw, progress) = (
            http.clone(),
            manifest.clone(),
            next.clone(),
            done.clone(),
            bytes.clone(),
            raw.clone(),
            progress.clone(),
        );
        set.spawn(async move {
            let mut acc = Aggregate::new(by);
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(blob) = manifest.blobs.get(i) else {
                    return Ok(acc);
                };
                let agg = one_blob(&http, &manifest, blob, by, raw.clone(), &bytes).await?;
                acc.merge(agg)
                    .map_err(|e| corrupt(&blob.name, e.to_string()))?;
                progress(Progress {
                    blobs_done: done.fetch_add(1, Ordering::SeqCst) + 1,
                    blobs,
                    compressed_bytes: bytes.load(Ordering::Relaxed),
                });
            }
        });
    }
    drop(raw);
    let mut total = Aggregate::new(by);
    while let Some(joined) = set.join_next().await {
        let result = joined.unwrap_or_else(|e| {
            Err(BillingError::Manifest(format!(
                "a download task stopped: {e}"
            )))
        });
        match result {
            Ok(agg) => total
                .merge(agg)
                .map_err(|e| BillingError::Manifest(e.to_string()))?,
            Err(e) => {
                set.abort_all();
                return Err(e);
            }
        }
    }
    Ok(ExportData {
        aggregate: total,
        compressed_bytes: bytes.load(Ordering::Relaxed),
        blobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(text: &str) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    const LINES: &str = "{\"CustomerId\":\"c1\",\"BillingPreTaxTotal\":1.25,\"BillingCurrency\":\"USD\"}\n\n{\"customerId\":\"c1\",\"billingPreTaxTotal\":\"2.5\",\"billingCurrency\":\"USD\"}";

    #[test]
    fn lines_and_arrays_give_the_same_totals() {
        let a = parse_blob(&gz(LINES)[..], "b", GroupBy::Customer, None).unwrap();
        let arr = format!(
            "[{}]",
            LINES
                .split('\n')
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(",")
        );
        let b = parse_blob(&gz(&arr)[..], "b", GroupBy::Customer, None).unwrap();
        assert_eq!(a.customers(), b.customers());
        assert_eq!(a.customers()[0].total.to_string(), "3.75");
        assert_eq!(a.lines, 2);
    }

    #[test]
    fn a_blob_cut_short_or_damaged_is_an_error_not_a_smaller_total() {
        let big: String = (0..5000).map(|i| format!("{{\"CustomerId\":\"c{i}\",\"BillingPreTaxTotal\":1,\"BillingCurrency\":\"USD\"}}\n")).collect();
        let bytes = gz(&big);
        let cut = parse_blob(&bytes[..bytes.len() / 2], "b", GroupBy::Customer, None);
        assert!(matches!(cut, Err(BillingError::Corrupt { .. })), "{cut:?}");
        let bad = parse_blob(
            &gz("{\"CustomerId\":\"c1\"\n")[..],
            "b",
            GroupBy::Customer,
            None,
        );
        assert!(matches!(bad, Err(BillingError::Corrupt { .. })));
        let not_gzip = parse_blob(&b"{\"a\":1}\n"[..], "b", GroupBy::Customer, None);
        assert!(matches!(not_gzip, Err(BillingError::Corrupt { .. })));
    }
}
