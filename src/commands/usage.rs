//! `usage`: every customer's Azure usage and costs through Graph's partner billing export,
//! App-only with the stored secret: export, wait, stream the blobs, and print the summary.

use super::{Ctx, print_json};
use crate::cli::{ByArg, FormatArg, PeriodArg, UsageArgs};
use crate::exit::{Exit, UserError};
use crate::partner_center::billing::{
    AttributeSet, BILLING_PERMISSION, BillingClient, BillingError, BillingPeriod, EXCLUDES,
    ExportEvent, ExportScope, ensure_available, graph_app_token, token_roles,
};
use crate::usage::output::{self, Format, PrivateFile, RawWriter};
use crate::usage::stream::{self, Progress};
use crate::usage::{Aggregate, GroupBy, SummaryRow};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Version of the `--json` document; bumped only when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

fn fail(e: BillingError) -> anyhow::Error {
    e.to_user_error().into()
}

fn format_of(args: &UsageArgs) -> Result<Format, UserError> {
    let from_ext = || {
        let ext = args
            .out
            .as_ref()?
            .extension()?
            .to_string_lossy()
            .to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Csv),
            "json" | "jsonl" | "ndjson" => Some(Format::Json),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    };
    let format = match args.format {
        Some(FormatArg::Table) => Format::Table,
        Some(FormatArg::Csv) => Format::Csv,
        Some(FormatArg::Json) => Format::Json,
        Some(FormatArg::Parquet) => Format::Parquet,
        None => from_ext().unwrap_or(if args.out.is_some() {
            Format::Csv
        } else {
            Format::Table
        }),
    };
    if format == Format::Parquet && args.out.is_none() {
        return Err(
            UserError::usage("--format parquet writes a file").hint("add --out FILE.parquet")
        );
    }
    if format == Format::Table && args.out.is_some() {
        return Err(
            UserError::usage("--out writes csv, json or parquet, not a table")
                .hint("pass --format csv, json or parquet (or a file name ending in one of them)"),
        );
    }
    Ok(format)
}

fn scope_of(args: &UsageArgs) -> Result<ExportScope, UserError> {
    if let Some(invoice) = &args.invoice {
        let ok = !invoice.is_empty() && invoice.chars().all(|c| c.is_ascii_alphanumeric());
        if !ok {
            return Err(
                UserError::usage(format!("--invoice {invoice:?} is not an invoice ID"))
                    .hint("invoice IDs look like G012345678"),
            );
        }
        return Ok(ExportScope::Billed {
            invoice_id: invoice.clone(),
        });
    }
    let c = args.currency.trim();
    if c.len() != 3 || !c.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(
            UserError::usage(format!("--currency {c:?} is not a currency code"))
                .hint("give an ISO 4217 code such as USD, EUR or GBP"),
        );
    }
    Ok(ExportScope::Unbilled {
        currency: c.to_ascii_uppercase(),
        period: match args.period {
            PeriodArg::Current => BillingPeriod::Current,
            PeriodArg::Last => BillingPeriod::Last,
        },
    })
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

pub async fn run(ctx: &mut Ctx, args: UsageArgs) -> anyhow::Result<Exit> {
    let format = format_of(&args)?;
    let scope = scope_of(&args)?;
    if args.top == Some(0) {
        return Err(UserError::usage("--top must be at least 1").into());
    }
    let by = match args.by {
        ByArg::Customer => GroupBy::Customer,
        ByArg::Subscription => GroupBy::Subscription,
        ByArg::MeterCategory => GroupBy::MeterCategory,
        ByArg::Day => GroupBy::Day,
    };
    let p = ctx.require_profile()?;
    let cloud = ctx.cloud(Some(&p))?;
    ensure_available(cloud).map_err(fail)?;
    let ep = ctx.endpoints(cloud).await?;
    let secrets = ctx.secrets(cloud, Some(&p)).await?;
    let secret = ctx.stored_secret(&secrets, &p).await?;
    let http = ctx.http()?;
    let started = Instant::now();

    let spin = ctx
        .ui
        .spinner("Signing in as the app (App-only) to Microsoft Graph…");
    let token = graph_app_token(&http, &ep, &p.tenant_id, &p.app_id, &secret).await?;
    // Tell "no consent yet" before asking for an export that would be refused.
    if let Some(roles) = token_roles(&token)
        && !roles.iter().any(|r| r == BILLING_PERMISSION)
    {
        return Err(fail(BillingError::NoPermission(None)));
    }
    let client = BillingClient::new(http.clone(), &ep, token);
    spin.set("Asking Microsoft for the usage export…");
    // The basic set is enough unless meters or raw line items are wanted: less to download.
    let attributes = if by == GroupBy::MeterCategory || args.raw {
        AttributeSet::Full
    } else {
        AttributeSet::Basic
    };
    let operation = client
        .start_export(&scope, attributes)
        .await
        .map_err(fail)?;
    spin.set("Microsoft is preparing the export (this can take many minutes)…");
    let deadline = Duration::from_secs(args.wait_minutes.max(1) * 60);
    let manifest = client
        .wait_for_manifest(
            &operation,
            deadline,
            |ExportEvent::Running { elapsed, next }| {
                spin.set(format!(
                    "Microsoft is preparing the export ({} s so far; next check in {} s)…",
                    elapsed.as_secs(),
                    next.as_secs()
                ));
            },
        )
        .await
        .map_err(fail)?;
    spin.finish();
    let export_time = started.elapsed();
    ctx.ui.done(format!(
        "Export ready: {} blob(s) ({})",
        manifest.blobs.len(),
        manifest.data_format
    ));

    // Raw line items go to a writer thread through a bounded channel: the download never waits
    // on more than a few batches, and never holds the export in memory.
    let raw_out = if args.raw { args.out.clone() } else { None };
    let (raw_tx, raw_thread) = match &raw_out {
        Some(path) => {
            let mut w = RawWriter::create(path, format)?;
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<output::RawRow>>(4);
            let t = std::thread::spawn(move || -> anyhow::Result<RawWriter> {
                for batch in rx {
                    w.write(batch)?;
                }
                Ok(w)
            });
            (Some(tx), Some(t))
        }
        None => (None, None),
    };
    let progress = progress_reporter(&ctx.ui, manifest.blobs.len());
    // One parser per core, plus one so that a core never idles while a blob's download starts.
    let parallel = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
        + 1;
    let download = Instant::now();
    let result = stream::aggregate(&http, manifest, by, raw_tx, parallel, progress.report).await;
    (progress.finish)();
    let data = result.map_err(fail)?;
    let read_time = download.elapsed();
    if let Some(t) = raw_thread {
        let writer = t
            .join()
            .map_err(|_| anyhow::anyhow!("the line-item writer stopped"))??;
        writer.finish()?;
    }

    let agg = &data.aggregate;
    let rows = agg.rows();
    let doc = json_document(
        &p.profile,
        &p.tenant_id,
        &scope,
        agg,
        &rows,
        args.top,
        &data,
    );
    if ctx.ui.json {
        print_json(&ctx.ui, &doc);
    }
    match (&args.out, args.raw) {
        (Some(path), true) => ctx.ui.done(format!(
            "Wrote {} line items to {}",
            agg.lines,
            path.display()
        )),
        (Some(path), false) => {
            let shown = &rows[..args.top.unwrap_or(usize::MAX).min(rows.len())];
            match format {
                Format::Parquet => output::write_summary_parquet(path, by, shown)?,
                Format::Json => {
                    let mut f = PrivateFile::create(path)?;
                    writeln!(f, "{doc:#}")?;
                    f.commit()?;
                }
                _ => {
                    let mut f = PrivateFile::create(path)?;
                    output::write_summary_csv(&mut f, by, shown)?;
                    f.commit()?;
                }
            }
            ctx.ui
                .done(format!("Wrote {} rows to {}", shown.len(), path.display()));
        }
        (None, _) => {}
    }
    if !ctx.ui.json {
        let print_table = args.out.is_none() || args.raw;
        let mut stdout = std::io::stdout().lock();
        match format {
            Format::Csv if args.out.is_none() => {
                let shown = &rows[..args.top.unwrap_or(usize::MAX).min(rows.len())];
                output::write_summary_csv(&mut stdout, by, shown)?;
            }
            Format::Json if args.out.is_none() => writeln!(stdout, "{doc:#}")?,
            _ if print_table => {
                let table = output::render_table(by, &rows, args.top, &agg.totals());
                write!(stdout, "{table}")?;
            }
            _ => {}
        }
    }
    let what = match &scope {
        ExportScope::Unbilled { period, .. } => {
            format!("Unbilled usage, {} billing period", period.as_str())
        }
        ExportScope::Billed { invoice_id } => format!("Billed usage of invoice {invoice_id}"),
    };
    let days = match (&agg.first_day, &agg.last_day) {
        (Some(a), Some(b)) => format!(" ({a} to {b})"),
        _ => String::new(),
    };
    ctx.ui.info(format!(
        "{what}{days}: {} line items from {} blob(s), {} compressed, read in {:.1} s (export {:.1} s).",
        agg.lines,
        data.blobs,
        mb(data.compressed_bytes),
        read_time.as_secs_f64(),
        export_time.as_secs_f64()
    ));
    ctx.ui.info(format!(
        "Amounts are pre-tax, in the billing currency. The export excludes {EXCLUDES}."
    ));
    Ok(Exit::Success)
}

struct ProgressReporter {
    report: Arc<dyn Fn(Progress) + Send + Sync>,
    finish: Box<dyn FnOnce() + Send>,
}

/// A progress bar over the blobs on a terminal; plain lines (about every tenth blob) otherwise.
fn progress_reporter(ui: &crate::ui::Ui, blobs: usize) -> ProgressReporter {
    if ui.quiet {
        return ProgressReporter {
            report: Arc::new(|_| {}),
            finish: Box::new(|| {}),
        };
    }
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(blobs as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30.cyan/dim} {pos}/{len} blobs  {msg}  {elapsed:.dim}",
            )
            .expect("static template"),
        );
        let b = bar.clone();
        return ProgressReporter {
            report: Arc::new(move |p: Progress| {
                b.set_position(p.blobs_done as u64);
                b.set_message(mb(p.compressed_bytes));
            }),
            finish: Box::new(move || bar.finish_and_clear()),
        };
    }
    let step = blobs.div_ceil(10).max(1);
    ProgressReporter {
        report: Arc::new(move |p: Progress| {
            if p.blobs_done.is_multiple_of(step) || p.blobs_done == p.blobs {
                eprintln!(
                    "… {}/{} blobs read ({})",
                    p.blobs_done,
                    p.blobs,
                    mb(p.compressed_bytes)
                );
            }
        }),
        finish: Box::new(|| {}),
    }
}

fn row_json(by: GroupBy, r: &SummaryRow) -> serde_json::Value {
    let mut v = serde_json::json!({
        "key": r.key,
        "currency": r.currency,
        "total": r.total.cents(),
        "line_items": r.lines,
    });
    if matches!(by, GroupBy::Customer | GroupBy::Subscription) {
        v["customer_id"] = r.customer_id.clone().into();
        v["name"] = r.name.clone().into();
    }
    v
}

/// The `--json` document (README, "usage --json"). Amounts are decimal strings rounded to the
/// cent from exact sums, so no float ever touches them.
fn json_document(
    profile: &str,
    tenant: &str,
    scope: &ExportScope,
    agg: &Aggregate,
    rows: &[SummaryRow],
    top: Option<usize>,
    data: &stream::ExportData,
) -> serde_json::Value {
    let export = match scope {
        ExportScope::Unbilled { currency, period } => serde_json::json!({
            "kind": "unbilled", "billing_period": period.as_str(), "currency": currency, "invoice_id": null,
        }),
        ExportScope::Billed { invoice_id } => serde_json::json!({
            "kind": "billed", "billing_period": null, "currency": null, "invoice_id": invoice_id,
        }),
    };
    let customers: Vec<serde_json::Value> = agg
        .customers()
        .iter()
        .map(|r| {
            serde_json::json!({
                "customer_id": r.key, "name": r.name, "total": r.total.cents(),
                "currency": r.currency, "line_items": r.lines,
            })
        })
        .collect();
    let shown = top.unwrap_or(usize::MAX).min(rows.len());
    serde_json::json!({
        "schema_version": SCHEMA_VERSION,
        "ok": true,
        "profile": profile,
        "tenant_id": tenant,
        "export": export,
        "first_usage_date": agg.first_day,
        "last_usage_date": agg.last_day,
        "line_items": agg.lines,
        "blobs": data.blobs,
        "compressed_bytes": data.compressed_bytes,
        "totals": agg.totals().iter().map(|(c, t, n)| serde_json::json!({"currency": c, "total": t.cents(), "line_items": n})).collect::<Vec<_>>(),
        "customers": customers,
        "by": agg.by().as_str(),
        "groups": rows[..shown].iter().map(|r| row_json(agg.by(), r)).collect::<Vec<_>>(),
        "groups_omitted": rows.len() - shown,
        "excludes": EXCLUDES,
    })
}
