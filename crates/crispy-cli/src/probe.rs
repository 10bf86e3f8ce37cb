//! `crispy probe`.

use std::io::{self, Write};

use anyhow::Result;
use crispy_core::{PacketSource, ResolutionProbe};
use crispy_probe::{Mp4Probe, Mp4Report, ProbeReport, SpsProbe, SpsReport, StreamStats};
use crispy_source::FileSource;

use crate::cli::ProbeArgs;
use crate::output::to_stdout;

pub fn probe(args: ProbeArgs) -> Result<()> {
    let shown = args.file.to_string_lossy();
    if shown.contains("://") && !args.file.exists() {
        return Err(crate::exit::UsageError(format!(
            "probe reads video files, not URLs ({}): for a camera, `crispy run --source URL` \
             logs the stream's codec and resolution when it connects",
            crispy_core::redact::redact_urls(&shown)
        ))
        .into());
    }
    let mut source = FileSource::open(&args.file)?;
    let info = source.stream_info().clone();
    let rotation = source
        .display_matrix()
        .map_or(0, |m| crispy_core::display_rotation(&m));
    let mut stats = StreamStats::new(info.time_base);
    while let Some(packet) = source.next_packet()? {
        stats.record(&packet);
    }
    let size = SpsProbe
        .resolution(&info)
        .unwrap_or((info.width, info.height));
    let fps = info.frame_rate.map(|r| r.as_f64());
    let report = stats.report(info.codec.name(), info.profile.as_deref(), size, fps);
    let sps = match SpsProbe::report(info.codec, &info.extradata) {
        Some(Ok(sps)) => Some(sps),
        Some(Err(e)) => {
            tracing::warn!("parameter sets: {e}");
            None
        }
        None => None,
    };
    // MP4 input (a chunk, or any .mp4): what its boxes say, read by a second parser.
    let mp4 = Mp4Probe::probe_file(&args.file).ok();
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["file"] = args.file.display().to_string().into();
        value["rotation"] = rotation.into();
        value["sps"] = serde_json::to_value(&sps)?;
        value["mp4"] = serde_json::to_value(&mp4)?;
        let text = serde_json::to_string_pretty(&value)?;
        return to_stdout(|out| writeln!(out, "{text}"));
    }
    to_stdout(|out| print_text(out, &args, &report, rotation, sps.as_ref(), mp4.as_ref()))
}

fn print_text(
    out: &mut dyn Write,
    args: &ProbeArgs,
    report: &ProbeReport,
    rotation: u16,
    sps: Option<&SpsReport>,
    mp4: Option<&Mp4Report>,
) -> io::Result<()> {
    let dash = || "-".to_owned();
    // A file name can hold anything; a terminal or log reading this must not take part of
    // it for a line or a control sequence.
    let file = args.file.display().to_string();
    writeln!(
        out,
        "file        {}",
        crispy_core::redact::escape_controls(&file)
    )?;
    match &report.profile {
        Some(p) => writeln!(out, "codec       {} ({p})", report.codec)?,
        None => writeln!(out, "codec       {}", report.codec)?,
    }
    writeln!(out, "resolution  {}x{}", report.width, report.height)?;
    if rotation != 0 {
        let (w, h) = if rotation % 180 == 90 {
            (report.height, report.width)
        } else {
            (report.width, report.height)
        };
        writeln!(
            out,
            "rotation    {rotation}° counterclockwise (players show it {w}x{h})"
        )?;
    }
    if let Some(sps) = sps {
        let tier = sps
            .tier
            .as_deref()
            .map(|t| format!(", {t} tier"))
            .unwrap_or_default();
        writeln!(out, "level       {}{tier}", sps.level)?;
        writeln!(
            out,
            "pixels      {}, {}-bit{}",
            sps.chroma_format,
            sps.bit_depth_luma,
            if sps.interlaced { ", interlaced" } else { "" }
        )?;
        if (sps.coded_width, sps.coded_height) != (sps.width, sps.height) {
            writeln!(
                out,
                "coded       {}x{} (cropped)",
                sps.coded_width, sps.coded_height
            )?;
        }
        if let Some(f) = sps.frame_rate {
            writeln!(out, "sps fps     {}", (f * 1000.0).round() / 1000.0)?;
        }
    }
    writeln!(
        out,
        "fps         {}",
        report.fps.map_or_else(dash, |f| format!("{f}"))
    )?;
    writeln!(
        out,
        "duration    {:.3} s",
        report.duration_ms as f64 / 1000.0
    )?;
    if report.hidden_frames > 0 {
        writeln!(
            out,
            "frames      {} shown (+{} before the edit list's start: decoded, not shown)",
            report.frames, report.hidden_frames
        )?;
    } else {
        writeln!(out, "frames      {}", report.frames)?;
    }
    writeln!(out, "keyframes   {}", report.keyframes)?;
    let gop = match (report.gop_min_frames, report.gop_max_frames, report.gop_ms) {
        (Some(a), Some(b), Some(ms)) if a == b => format!("{b} frames ({ms} ms)"),
        (Some(a), Some(b), Some(ms)) => format!("{a}..{b} frames (up to {ms} ms)"),
        (Some(a), Some(b), None) => format!("{a}..{b} frames"),
        _ => "single keyframe".to_owned(),
    };
    writeln!(out, "gop         {gop}")?;
    if let Some(mp4) = mp4 {
        writeln!(
            out,
            "mp4         {} samples{}, {} keyframes, {} ms ({} ticks at 1/{}){}{}",
            mp4.samples,
            if mp4.shown == mp4.samples {
                String::new()
            } else {
                format!(" ({} shown)", mp4.shown)
            },
            mp4.keyframes,
            mp4.duration_ms,
            mp4.duration_ts,
            mp4.timescale,
            if mp4.presented_ts == mp4.duration_ts {
                String::new()
            } else {
                format!(", {} ticks shown", mp4.presented_ts)
            },
            if mp4.starts_with_keyframe {
                ""
            } else {
                ", does not start on a keyframe"
            }
        )?;
    }
    writeln!(
        out,
        "bitrate     {}",
        report
            .bitrate_kbps
            .map_or_else(dash, |b| format!("{b} kb/s"))
    )?;
    Ok(())
}
