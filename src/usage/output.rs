//! What `usage` writes: the summary as a terminal table, CSV, the JSON document or Parquet, and
//! (`--out --raw`) every line item as CSV, JSON lines or Parquet. Files are 0600 (billing data is
//! confidential), written beside the target and renamed into place only when complete.

use super::amount::{Amount, SCALE};
use super::lineitem::LineItem;
use super::{GroupBy, SummaryRow};
use anyhow::Context as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
    Parquet,
}

/// One line item as `--out --raw` writes it: the columns the summaries use, normalised names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    pub customer_id: String,
    pub customer_name: String,
    pub subscription_id: String,
    pub usage_date: String,
    pub meter_category: String,
    pub meter_name: String,
    pub unit: String,
    pub quantity: Option<Amount>,
    pub billing_pre_tax_total: Amount,
    pub billing_currency: String,
}

impl From<&LineItem<'_>> for RawRow {
    fn from(i: &LineItem<'_>) -> Self {
        RawRow {
            customer_id: i.customer_id.to_string(),
            customer_name: i.customer_name.to_string(),
            subscription_id: i.subscription_id.to_string(),
            usage_date: i.usage_date.to_string(),
            meter_category: i.meter_category.to_string(),
            meter_name: i.meter_name.to_string(),
            unit: i.unit.to_string(),
            quantity: i.quantity,
            billing_pre_tax_total: i.total.unwrap_or_default(),
            billing_currency: i.currency.to_string(),
        }
    }
}

const RAW_COLUMNS: [&str; 10] = [
    "customer_id",
    "customer_name",
    "subscription_id",
    "usage_date",
    "meter_category",
    "meter_name",
    "unit",
    "quantity",
    "billing_pre_tax_total",
    "billing_currency",
];

/// A file written under a temporary name (0600) and renamed into place by [`PrivateFile::commit`];
/// dropped uncommitted, it is removed, so a failed run never leaves a partial file behind.
pub struct PrivateFile {
    tmp: PathBuf,
    target: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl PrivateFile {
    pub fn create(target: &Path) -> anyhow::Result<PrivateFile> {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "usage".into());
        let tmp = target.with_file_name(format!(".{name}.partial"));
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let file = o
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        Ok(PrivateFile {
            tmp,
            target: target.to_path_buf(),
            file: Some(std::io::BufWriter::with_capacity(1 << 20, file)),
        })
    }

    fn writer(&mut self) -> &mut std::io::BufWriter<std::fs::File> {
        self.file.as_mut().expect("open until committed")
    }

    pub fn commit(mut self) -> anyhow::Result<()> {
        let file = self.file.take().expect("open until committed");
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&self.tmp, &self.target)
            .with_context(|| format!("writing {}", self.target.display()))?;
        Ok(())
    }
}

impl Drop for PrivateFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            self.file = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Write for PrivateFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer().flush()
    }
}

fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// The summary's columns for a grouping: (header, value of a row).
/// A column: its header and how a row fills it.
type Column = (&'static str, fn(&SummaryRow) -> String);

fn summary_columns(by: GroupBy) -> Vec<Column> {
    let key: &'static str = match by {
        GroupBy::Customer => "customer_id",
        GroupBy::Subscription => "subscription_id",
        GroupBy::MeterCategory => "meter_category",
        GroupBy::Day => "day",
    };
    let mut cols: Vec<Column> = vec![(key, |r| r.key.clone())];
    match by {
        GroupBy::Customer => cols.push(("customer_name", |r| r.name.clone())),
        GroupBy::Subscription => {
            cols.push(("customer_id", |r| r.customer_id.clone()));
            cols.push(("customer_name", |r| r.name.clone()));
        }
        _ => {}
    }
    cols.push(("currency", |r| r.currency.clone()));
    cols.push(("total", |r| r.total.cents()));
    cols.push(("line_items", |r| r.lines.to_string()));
    cols
}

pub fn write_summary_csv(
    out: &mut dyn Write,
    by: GroupBy,
    rows: &[SummaryRow],
) -> std::io::Result<()> {
    let cols = summary_columns(by);
    let header: Vec<&str> = cols.iter().map(|(h, _)| *h).collect();
    writeln!(out, "{}", header.join(","))?;
    for r in rows {
        let line: Vec<String> = cols
            .iter()
            .map(|(_, f)| csv_field(&f(r)).into_owned())
            .collect();
        writeln!(out, "{}", line.join(","))?;
    }
    Ok(())
}

/// The human table: name, ID, line items, total, largest first; `--top` keeps the first rows
/// and sums the rest into one line; the grand total per currency closes it.
pub fn render_table(
    by: GroupBy,
    rows: &[SummaryRow],
    top: Option<usize>,
    totals: &[(String, Amount, u64)],
) -> String {
    let shown = top.unwrap_or(usize::MAX).min(rows.len());
    let mut lines: Vec<[String; 4]> = Vec::new();
    let label = |r: &SummaryRow| -> [String; 2] {
        match by {
            GroupBy::Customer => [r.name.clone(), r.key.clone()],
            GroupBy::Subscription => [r.name.clone(), r.key.clone()],
            GroupBy::MeterCategory | GroupBy::Day => [
                if r.key.is_empty() {
                    "(not in the export)".into()
                } else {
                    r.key.clone()
                },
                String::new(),
            ],
        }
    };
    for r in &rows[..shown] {
        let [a, b] = label(r);
        lines.push([
            a,
            b,
            r.lines.to_string(),
            format!("{} {}", r.total.cents(), r.currency),
        ]);
    }
    let rest = &rows[shown..];
    if !rest.is_empty() {
        // The others, per currency, so the column still adds up to the total.
        let mut per: Vec<(String, Amount, u64)> = Vec::new();
        for r in rest {
            match per.iter_mut().find(|(c, _, _)| *c == r.currency) {
                Some((_, t, n)) => {
                    *t = t.checked_add(r.total).unwrap_or(*t);
                    *n += r.lines;
                }
                None => per.push((r.currency.clone(), r.total, r.lines)),
            }
        }
        for (c, t, n) in per {
            lines.push([
                format!("… {} more", rest.len()),
                String::new(),
                n.to_string(),
                format!("{} {c}", t.cents()),
            ]);
        }
    }
    let head: [&str; 4] = match by {
        GroupBy::Customer => ["Customer", "Customer ID", "Line items", "Total"],
        GroupBy::Subscription => ["Customer", "Subscription ID", "Line items", "Total"],
        GroupBy::MeterCategory => ["Meter category", "", "Line items", "Total"],
        GroupBy::Day => ["Day", "", "Line items", "Total"],
    };
    let total_lines: Vec<[String; 4]> = totals
        .iter()
        .map(|(c, t, n)| {
            [
                "Total".to_string(),
                String::new(),
                n.to_string(),
                format!("{} {c}", t.cents()),
            ]
        })
        .collect();
    let all = lines.iter().chain(total_lines.iter());
    let mut w = [0usize; 4];
    for (i, h) in head.iter().enumerate() {
        w[i] = h.chars().count();
    }
    for l in all.clone() {
        for i in 0..4 {
            w[i] = w[i].max(l[i].chars().count());
        }
    }
    w[0] = w[0].min(40);
    let fit = |s: &str, n: usize| -> String {
        if s.chars().count() > n {
            let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
            t.push('…');
            t
        } else {
            s.to_string()
        }
    };
    let row = |c: [&str; 4]| -> String {
        let mut s = format!("{:<w0$}", fit(c[0], w[0]), w0 = w[0]);
        if w[1] > 0 {
            s.push_str(&format!("  {:<w1$}", c[1], w1 = w[1]));
        }
        s.push_str(&format!(
            "  {:>w2$}  {:>w3$}",
            c[2],
            c[3],
            w2 = w[2],
            w3 = w[3]
        ));
        s.trim_end().to_string() + "\n"
    };
    let mut out = row(head);
    let rule = |n: usize| "─".repeat(n);
    let sep = [
        rule(w[0]),
        if w[1] > 0 { rule(w[1]) } else { String::new() },
        rule(w[2]),
        rule(w[3]),
    ];
    out.push_str(&row([&sep[0], &sep[1], &sep[2], &sep[3]]));
    for l in &lines {
        out.push_str(&row([&l[0], &l[1], &l[2], &l[3]]));
    }
    out.push_str(&row([&sep[0], &sep[1], &sep[2], &sep[3]]));
    for l in &total_lines {
        out.push_str(&row([&l[0], &l[1], &l[2], &l[3]]));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Parquet, through the crate's low-level column writers (no Arrow: far less to compile).

mod pq {
    use super::*;
    use parquet::basic::Compression;
    use parquet::data_type::{
        ByteArray, ByteArrayType, FixedLenByteArray, FixedLenByteArrayType, Int64Type,
    };
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    pub enum Col {
        Text(Vec<String>),
        /// Decimal as 16-byte two's complement (DECIMAL(38, s)); None is null.
        Decimal(Vec<Option<i128>>),
        Int(Vec<i64>),
    }

    pub struct Writer {
        inner: SerializedFileWriter<PrivateFile>,
    }

    impl Writer {
        pub fn new(file: PrivateFile, schema: &str) -> anyhow::Result<Writer> {
            let schema = Arc::new(parse_message_type(schema)?);
            let props = Arc::new(
                WriterProperties::builder()
                    .set_compression(Compression::GZIP(Default::default()))
                    .build(),
            );
            Ok(Writer {
                inner: SerializedFileWriter::new(file, schema, props)?,
            })
        }

        pub fn row_group(&mut self, cols: Vec<Col>) -> anyhow::Result<()> {
            let mut rg = self.inner.next_row_group()?;
            let mut cols = cols.into_iter();
            while let Some(mut w) = rg.next_column()? {
                match cols.next().context("a column for every schema field")? {
                    Col::Text(v) => {
                        let v: Vec<ByteArray> = v
                            .into_iter()
                            .map(|s| ByteArray::from(s.into_bytes()))
                            .collect();
                        w.typed::<ByteArrayType>().write_batch(&v, None, None)?;
                    }
                    Col::Int(v) => {
                        w.typed::<Int64Type>().write_batch(&v, None, None)?;
                    }
                    Col::Decimal(v) => {
                        let defs: Vec<i16> = v.iter().map(|x| i16::from(x.is_some())).collect();
                        let vals: Vec<FixedLenByteArray> = v
                            .iter()
                            .flatten()
                            .map(|x| {
                                FixedLenByteArray::from(ByteArray::from(x.to_be_bytes().to_vec()))
                            })
                            .collect();
                        w.typed::<FixedLenByteArrayType>()
                            .write_batch(&vals, Some(&defs), None)?;
                    }
                }
                w.close()?;
            }
            rg.close()?;
            Ok(())
        }

        pub fn finish(self) -> anyhow::Result<PrivateFile> {
            Ok(self.inner.into_inner()?)
        }
    }
}

pub fn write_summary_parquet(path: &Path, by: GroupBy, rows: &[SummaryRow]) -> anyhow::Result<()> {
    use pq::Col;
    let key = summary_columns(by)[0].0;
    let schema = format!(
        "message usage_summary {{ REQUIRED BYTE_ARRAY {key} (UTF8); REQUIRED BYTE_ARRAY customer_name (UTF8); REQUIRED BYTE_ARRAY customer_id (UTF8); REQUIRED BYTE_ARRAY currency (UTF8); OPTIONAL FIXED_LEN_BYTE_ARRAY (16) total (DECIMAL(38,2)); REQUIRED INT64 line_items; }}"
    );
    let mut w = pq::Writer::new(PrivateFile::create(path)?, &schema)?;
    w.row_group(vec![
        Col::Text(rows.iter().map(|r| r.key.clone()).collect()),
        Col::Text(rows.iter().map(|r| r.name.clone()).collect()),
        Col::Text(rows.iter().map(|r| r.customer_id.clone()).collect()),
        Col::Text(rows.iter().map(|r| r.currency.clone()).collect()),
        Col::Decimal(rows.iter().map(|r| Some(r.total.cents_i128())).collect()),
        Col::Int(rows.iter().map(|r| r.lines as i64).collect()),
    ])?;
    w.finish()?.commit()
}

/// Rows per Parquet row group of `--raw` output: bounded memory, still large groups.
const RAW_ROW_GROUP: usize = 65_536;

/// The `--out --raw` writer: runs on its own thread, fed in batches; `finish` commits the file.
pub struct RawWriter {
    kind: RawKind,
    pending: Vec<RawRow>,
}

enum RawKind {
    Csv(PrivateFile),
    Jsonl(PrivateFile),
    Parquet(pq::Writer),
}

impl RawWriter {
    pub fn create(path: &Path, format: Format) -> anyhow::Result<RawWriter> {
        let file = PrivateFile::create(path)?;
        let kind = match format {
            Format::Csv | Format::Table => {
                let mut f = file;
                writeln!(f, "{}", RAW_COLUMNS.join(","))?;
                RawKind::Csv(f)
            }
            Format::Json => RawKind::Jsonl(file),
            Format::Parquet => RawKind::Parquet(pq::Writer::new(
                file,
                &format!(
                    "message usage_line_items {{ REQUIRED BYTE_ARRAY customer_id (UTF8); REQUIRED BYTE_ARRAY customer_name (UTF8); REQUIRED BYTE_ARRAY subscription_id (UTF8); REQUIRED BYTE_ARRAY usage_date (UTF8); REQUIRED BYTE_ARRAY meter_category (UTF8); REQUIRED BYTE_ARRAY meter_name (UTF8); REQUIRED BYTE_ARRAY unit (UTF8); OPTIONAL FIXED_LEN_BYTE_ARRAY (16) quantity (DECIMAL(38,{SCALE})); OPTIONAL FIXED_LEN_BYTE_ARRAY (16) billing_pre_tax_total (DECIMAL(38,{SCALE})); REQUIRED BYTE_ARRAY billing_currency (UTF8); }}"
                ),
            )?),
        };
        Ok(RawWriter {
            kind,
            pending: Vec::new(),
        })
    }

    pub fn write(&mut self, rows: Vec<RawRow>) -> anyhow::Result<()> {
        match &mut self.kind {
            RawKind::Csv(f) => {
                for r in rows {
                    writeln!(
                        f,
                        "{},{},{},{},{},{},{},{},{},{}",
                        csv_field(&r.customer_id),
                        csv_field(&r.customer_name),
                        csv_field(&r.subscription_id),
                        csv_field(&r.usage_date),
                        csv_field(&r.meter_category),
                        csv_field(&r.meter_name),
                        csv_field(&r.unit),
                        r.quantity.map(|q| q.to_string()).unwrap_or_default(),
                        r.billing_pre_tax_total,
                        csv_field(&r.billing_currency)
                    )?;
                }
            }
            RawKind::Jsonl(f) => {
                for r in rows {
                    let doc = serde_json::json!({
                        "customer_id": r.customer_id, "customer_name": r.customer_name,
                        "subscription_id": r.subscription_id, "usage_date": r.usage_date,
                        "meter_category": r.meter_category, "meter_name": r.meter_name, "unit": r.unit,
                        "quantity": r.quantity.map(|q| q.to_string()),
                        "billing_pre_tax_total": r.billing_pre_tax_total.to_string(),
                        "billing_currency": r.billing_currency,
                    });
                    writeln!(f, "{doc}")?;
                }
            }
            RawKind::Parquet(_) => {
                self.pending.extend(rows);
                if self.pending.len() >= RAW_ROW_GROUP {
                    self.flush_parquet()?;
                }
            }
        }
        Ok(())
    }

    fn flush_parquet(&mut self) -> anyhow::Result<()> {
        use pq::Col;
        let RawKind::Parquet(w) = &mut self.kind else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        let text =
            |f: fn(&RawRow) -> &String| Col::Text(rows.iter().map(|r| f(r).clone()).collect());
        w.row_group(vec![
            text(|r| &r.customer_id),
            text(|r| &r.customer_name),
            text(|r| &r.subscription_id),
            text(|r| &r.usage_date),
            text(|r| &r.meter_category),
            text(|r| &r.meter_name),
            text(|r| &r.unit),
            Col::Decimal(rows.iter().map(|r| r.quantity.map(|q| q.0)).collect()),
            Col::Decimal(
                rows.iter()
                    .map(|r| Some(r.billing_pre_tax_total.0))
                    .collect(),
            ),
            text(|r| &r.billing_currency),
        ])
    }

    pub fn finish(mut self) -> anyhow::Result<()> {
        self.flush_parquet()?;
        match self.kind {
            RawKind::Csv(f) | RawKind::Jsonl(f) => f.commit(),
            RawKind::Parquet(w) => w.finish()?.commit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, name: &str, total: &str) -> SummaryRow {
        SummaryRow {
            key: key.into(),
            name: name.into(),
            customer_id: key.into(),
            currency: "USD".into(),
            total: Amount::parse(total).unwrap(),
            lines: 2,
        }
    }

    #[test]
    fn the_table_keeps_the_top_rows_and_sums_the_rest() {
        let rows = vec![
            row("c1", "Fabrikam, Inc", "10.005"),
            row("c2", "Contoso", "2"),
            row("c3", "Adatum", "1"),
        ];
        let totals = vec![("USD".to_string(), Amount::parse("13.005").unwrap(), 6)];
        let t = render_table(GroupBy::Customer, &rows, Some(1), &totals);
        assert!(
            t.contains("Fabrikam, Inc") && t.contains("10.01 USD"),
            "{t}"
        );
        assert!(t.contains("… 2 more") && t.contains("3.00 USD"), "{t}");
        assert!(t.contains("Total") && t.contains("13.01 USD"), "{t}");
        let mut csv = Vec::new();
        write_summary_csv(&mut csv, GroupBy::Customer, &rows).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        assert!(csv.starts_with("customer_id,customer_name,currency,total,line_items\nc1,\"Fabrikam, Inc\",USD,10.01,2\n"), "{csv}");
    }

    #[test]
    fn files_are_private_and_appear_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        {
            let mut w = RawWriter::create(&path, Format::Parquet).unwrap();
            w.write(vec![RawRow {
                customer_id: "c".into(),
                customer_name: "n".into(),
                subscription_id: "s".into(),
                usage_date: "d".into(),
                meter_category: "m".into(),
                meter_name: "mn".into(),
                unit: "u".into(),
                quantity: None,
                billing_pre_tax_total: Amount::parse("1.5").unwrap(),
                billing_currency: "USD".into(),
            }])
            .unwrap();
            // Dropped without finish: nothing is left behind.
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let w = RawWriter::create(&path, Format::Parquet).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        write_summary_parquet(&path, GroupBy::Day, &[row("2026-12-01", "", "1")]).unwrap();
        assert!(std::fs::read(&path).unwrap().starts_with(b"PAR1"));
    }
}
