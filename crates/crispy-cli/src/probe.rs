//! `crispy probe`.

use anyhow::Result;
use crispy_core::{PacketSource, ResolutionProbe};
use crispy_probe::{SpsProbe, StreamStats};
use crispy_source::FileSource;

use crate::cli::ProbeArgs;

pub fn probe(args: ProbeArgs) -> Result<()> {
    let mut source = FileSource::open(&args.file)?;
    let info = source.stream_info().clone();
    let mut stats = StreamStats::new(info.time_base);
    while let Some(packet) = source.next_packet()? {
        stats.record(&packet);
    }
    let size = SpsProbe
        .resolution(&info)
        .unwrap_or((info.width, info.height));
    let fps = info.frame_rate.map(|r| r.as_f64());
    let report = stats.report(info.codec.name(), info.profile.as_deref(), size, fps);
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["file"] = args.file.display().to_string().into();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let dash = || "-".to_owned();
    println!("file        {}", args.file.display());
    match &report.profile {
        Some(p) => println!("codec       {} ({p})", report.codec),
        None => println!("codec       {}", report.codec),
    }
    println!("resolution  {}x{}", report.width, report.height);
    println!(
        "fps         {}",
        report.fps.map_or_else(dash, |f| format!("{f}"))
    );
    println!("duration    {:.3} s", report.duration_ms as f64 / 1000.0);
    println!("frames      {}", report.frames);
    println!("keyframes   {}", report.keyframes);
    let gop = match (report.gop_min_frames, report.gop_max_frames, report.gop_ms) {
        (Some(a), Some(b), Some(ms)) if a == b => format!("{b} frames ({ms} ms)"),
        (Some(a), Some(b), Some(ms)) => format!("{a}..{b} frames (up to {ms} ms)"),
        (Some(a), Some(b), None) => format!("{a}..{b} frames"),
        _ => "single keyframe".to_owned(),
    };
    println!("gop         {gop}");
    println!(
        "bitrate     {}",
        report
            .bitrate_kbps
            .map_or_else(dash, |b| format!("{b} kb/s"))
    );
    Ok(())
}
