//! `crispy verify`.

use std::io::{self, Write};

use anyhow::{Context, Result};
use crispy_pipeline::verify::{VerifyOptions, VerifyReport, verify as check};
use crispy_signer::VerifyingKeys;
use crispy_sink::ObjectStoreSink;

use crate::cli::VerifyArgs;
use crate::exit::{UsageError, VerifyFailed};
use crate::output::to_stdout;

pub fn verify(args: VerifyArgs) -> Result<()> {
    let mut keys = VerifyingKeys::new();
    for path in &args.public_key {
        keys.add_public_pem_file(path)?;
    }
    for var in &args.hmac_key_env {
        let secret = std::env::var(var).map_err(|_| {
            UsageError(format!(
                "--hmac-key-env: {}",
                crispy_core::redact::unset_env_var(var)
            ))
        })?;
        keys.add_hmac(secret.as_bytes())?;
    }
    if let (Some(from), Some(to)) = (args.from, args.to)
        && from > to
    {
        return Err(UsageError(format!("--from {from} is after --to {to}")).into());
    }
    let options = VerifyOptions {
        source_ids: args.source_id.clone(),
        from: args.from,
        to: args.to,
        keys,
        allow_unsigned: args.allow_unsigned,
    };
    let sink_options =
        crispy_sink::SinkOptions::parse_pairs(args.sink_opts.iter().map(String::as_str))?;
    let sink = ObjectStoreSink::from_url_existing(&args.sink, &sink_options)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Names a missing bucket, refused credentials or a dead endpoint before listing; writes
    // nothing (an auditor may only have read access).
    runtime.block_on(sink.preflight_read())?;
    let report = runtime.block_on(check(&sink, &options))?;
    if args.json {
        let text = serde_json::to_string_pretty(&report)?;
        to_stdout(|out| writeln!(out, "{text}"))?;
    } else {
        to_stdout(|out| print_report(out, &report))?;
    }
    if report.ok {
        Ok(())
    } else {
        Err(VerifyFailed(report.problems.len()).into())
    }
}

fn print_report(out: &mut dyn Write, report: &VerifyReport) -> io::Result<()> {
    for p in &report.problems {
        let source = p.source_id.as_deref().unwrap_or("-");
        let kind = serde_json::to_value(p.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let line = format!("PROBLEM {kind} [{source}] {}: {}", p.object, p.detail);
        writeln!(out, "{}", crispy_core::redact::escape_controls(&line))?;
    }
    for s in &report.sources {
        let signed = if s.key_ids.is_empty() {
            "unsigned".to_owned()
        } else {
            format!("signed by {}", s.key_ids.join(", "))
        };
        let line = format!(
            "{}: {} chunks, sequence {}..{}, {} .. {}, {signed}{}, {} discontinuities{}, {} problems",
            s.source_id,
            s.chunks,
            s.sequences.0,
            s.sequences.1,
            s.start_time
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            s.end_time
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            if s.unsigned > 0 && !s.key_ids.is_empty() {
                format!(" ({} unsigned)", s.unsigned)
            } else {
                String::new()
            },
            s.discontinuities,
            match s.run_end {
                Some(end) => format!(", run ended ({end})"),
                None => String::new(),
            },
            s.problems
        );
        writeln!(out, "{}", crispy_core::redact::escape_controls(&line))?;
    }
    if report.ok {
        writeln!(out, "OK: {} verified", report.sink)
    } else {
        writeln!(
            out,
            "FAILED: {} problem(s) in {}",
            report.problems.len(),
            report.sink
        )
    }
}
