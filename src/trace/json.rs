//! Chrome trace-event JSON for a [`Trace`], written by hand (no serialisation dependency):
//! <https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU>.
//!
//! Each track is a "thread" (`tid` = track index + 1) of its API's "process" (`pid` 1 host,
//! 2 Vulkan, 3 CUDA), named with `process_name`/`thread_name` metadata and ordered with
//! `thread_sort_index`; each span a complete event (`"ph":"X"`). Times are microseconds
//! with three decimals, printed from integer nanoseconds so that no precision is lost.

use std::fmt::Write as _;

use super::{ArgValue, Trace};

/// Appends `s` to `out` as a JSON string literal (quotes included).
pub(super) fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends integer nanoseconds as microseconds with three decimals.
fn micros(out: &mut String, ns: u64) {
    let _ = write!(out, "{}.{:03}", ns / 1_000, ns % 1_000);
}

fn metadata(out: &mut String, what: &str, pid: u32, tid: usize, key: &str, value: &str) {
    let _ = write!(
        out,
        "{{\"ph\":\"M\",\"name\":\"{what}\",\"pid\":{pid},\"tid\":{tid},\"args\":{{\"{key}\":{value}}}}}"
    );
}

/// The whole trace as a JSON object.
pub(super) fn write(trace: &Trace) -> String {
    let mut events: Vec<String> = Vec::new();
    let mut groups: Vec<(u32, &str)> = trace.tracks.iter().map(|t| t.kind.group()).collect();
    groups.sort_unstable();
    groups.dedup();
    for (pid, name) in groups {
        let mut e = String::new();
        let mut quoted = String::new();
        string(&mut quoted, name);
        metadata(&mut e, "process_name", pid, 0, "name", &quoted);
        events.push(e);
    }
    for (index, track) in trace.tracks.iter().enumerate() {
        let (pid, _) = track.kind.group();
        let mut quoted = String::new();
        string(&mut quoted, &track.name);
        let mut e = String::new();
        metadata(&mut e, "thread_name", pid, index + 1, "name", &quoted);
        events.push(e);
        let mut e = String::new();
        metadata(
            &mut e,
            "thread_sort_index",
            pid,
            index + 1,
            "sort_index",
            &index.to_string(),
        );
        events.push(e);
    }
    for (track, span) in &trace.spans {
        let (pid, _) = trace.tracks[track.0].kind.group();
        let mut e = String::from("{\"ph\":\"X\",\"name\":");
        string(&mut e, &span.name);
        let _ = write!(e, ",\"pid\":{pid},\"tid\":{},\"ts\":", track.0 + 1);
        micros(&mut e, span.start_ns);
        e.push_str(",\"dur\":");
        micros(&mut e, span.end_ns - span.start_ns);
        if !span.args.is_empty() {
            e.push_str(",\"args\":{");
            for (i, (key, value)) in span.args.iter().enumerate() {
                if i > 0 {
                    e.push(',');
                }
                string(&mut e, key);
                e.push(':');
                match value {
                    ArgValue::U64(v) => {
                        let _ = write!(e, "{v}");
                    }
                    ArgValue::Str(s) => string(&mut e, s),
                }
            }
            e.push('}');
        }
        e.push('}');
        events.push(e);
    }
    format!(
        "{{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n{}\n]}}\n",
        events.join(",\n")
    )
}

#[cfg(test)]
mod tests {
    use super::super::{Span, TrackKind};
    use super::*;

    fn quoted(s: &str) -> String {
        let mut out = String::new();
        string(&mut out, s);
        out
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(quoted("plain"), "\"plain\"");
        assert_eq!(quoted("a \"b\" \\c"), r#""a \"b\" \\c""#);
        assert_eq!(quoted("l1\nl2\tx\r"), r#""l1\nl2\tx\r""#);
        assert_eq!(quoted("\u{1}\u{1f}"), r#""\u0001\u001f""#);
        assert_eq!(
            quoted("4K → 1080p"),
            "\"4K → 1080p\"",
            "non-ASCII stays UTF-8"
        );
    }

    #[test]
    fn times_are_exact_microseconds() {
        let mut s = String::new();
        micros(&mut s, 12_345_678_901);
        assert_eq!(s, "12345678.901");
        s.clear();
        micros(&mut s, 7);
        assert_eq!(s, "0.007");
    }

    #[test]
    fn the_trace_has_the_chrome_shape() {
        let mut t = Trace::new();
        let host = t.track("main", TrackKind::HostThread);
        let queue = t.track(
            "queue 0 \"gfx\"",
            TrackKind::VulkanQueue {
                family: 0,
                index: 0,
            },
        );
        let stream = t.track("stream", TrackKind::CudaStream);
        t.push(queue, Span::new("render", 2_000, 2_500).frame(3))
            .unwrap();
        t.push(
            stream,
            Span::new("tonemap", 2_600, 2_900)
                .frame(3)
                .arg("size", "1080p"),
        )
        .unwrap();
        t.push(host, Span::new("submit", 1_000, 1_200)).unwrap();
        let json = t.to_json();
        let lines: Vec<&str> = json.lines().collect();
        let expected = [
            r#"{"displayTimeUnit":"ms","traceEvents":["#,
            r#"{"ph":"M","name":"process_name","pid":1,"tid":0,"args":{"name":"host"}},"#,
            r#"{"ph":"M","name":"process_name","pid":2,"tid":0,"args":{"name":"Vulkan"}},"#,
            r#"{"ph":"M","name":"process_name","pid":3,"tid":0,"args":{"name":"CUDA"}},"#,
            r#"{"ph":"M","name":"thread_name","pid":1,"tid":1,"args":{"name":"main"}},"#,
            r#"{"ph":"M","name":"thread_sort_index","pid":1,"tid":1,"args":{"sort_index":0}},"#,
            r#"{"ph":"M","name":"thread_name","pid":2,"tid":2,"args":{"name":"queue 0 \"gfx\""}},"#,
            r#"{"ph":"M","name":"thread_sort_index","pid":2,"tid":2,"args":{"sort_index":1}},"#,
            r#"{"ph":"M","name":"thread_name","pid":3,"tid":3,"args":{"name":"stream"}},"#,
            r#"{"ph":"M","name":"thread_sort_index","pid":3,"tid":3,"args":{"sort_index":2}},"#,
            r#"{"ph":"X","name":"render","pid":2,"tid":2,"ts":2.000,"dur":0.500,"args":{"frame":3}},"#,
            r#"{"ph":"X","name":"tonemap","pid":3,"tid":3,"ts":2.600,"dur":0.300,"args":{"frame":3,"size":"1080p"}},"#,
            r#"{"ph":"X","name":"submit","pid":1,"tid":1,"ts":1.000,"dur":0.200}"#,
            "]}",
        ];
        assert_eq!(lines, expected);
    }

    #[test]
    fn an_empty_trace_is_valid_json() {
        assert_eq!(
            Trace::new().to_json(),
            "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n\n]}\n"
        );
    }
}
