//! The `resedge` and `resedge-quantize` command lines, as scripts use them: outputs, the bench JSON
//! contract, and clear errors (non-zero exit, no panic) on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn resedge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resedge")).args(args).output().expect("resedge runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resedge-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A minimal float32 C-order .npy writer (format 1.0), independent of the CLI's reader.
fn write_npy(path: &Path, shape: &[usize], data: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// Reads back a float32 .npy: (shape, values).
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(header.contains("'<f4'"), "{header}");
    let inner = &header[header.find("'shape': (").unwrap() + 10..];
    let shape = inner[..inner.find(')').unwrap()].split(',').filter_map(|d| d.trim().parse().ok()).collect();
    let data = bytes[10 + hlen..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    (shape, data)
}

#[test]
fn zoo_lists_published_counts() {
    let o = resedge(&["zoo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for (name, params) in [("resnet18", "11,689,512"), ("resnet50", "25,557,032"), ("resnet152", "60,192,808")] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{out}"));
        assert!(line.contains(params), "{line}");
    }
}

#[test]
fn run_matches_the_library_for_a_batch() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/resnet20-random-int8.rsm");
    let (input, output) = (tmp("in.npy"), tmp("out.npy"));
    let x: Vec<f32> = resedge::zoo::random_input(2 * 3 * 32 * 32, 11);
    write_npy(&input, &[2, 3, 32, 32], &x);
    let o = resedge(&["run", model, "--input", input.to_str().unwrap(), "--output", output.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (shape, y) = read_npy(&output);
    assert_eq!(shape, [2, 10]);
    let bytes = std::fs::read(model).unwrap();
    let m = resedge::format::load(&bytes).unwrap();
    let plan = resedge::Plan::new(&m, &resedge::PlanOptions { batch: 2, ..Default::default() }).unwrap();
    assert_eq!(plan.executor().run(&x).unwrap(), &y[..]);
}

#[test]
fn bench_json_follows_the_peer_contract() {
    let o = resedge(&["bench", "--arch", "resnet20", "--precision", "int8", "--iters", "4", "--warmup", "1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let last = out.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert!(v["median_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["samples_ms"].as_array().unwrap().len(), 4);
    assert_eq!(v["precision"], "int8");
    assert!(out.contains("qs8_conv2d_requant_"), "arithmetic table missing:\n{out}");
}

#[test]
fn inspect_shows_kernels_and_arena() {
    let o = resedge(&["inspect", "--arch", "resnet18"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("f32_conv2d_") && out.contains("arena bytes: "), "{out}");
    assert!(out.contains("1.814 GMACs"), "{out}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/resnet20-random-int8.rsm");
    let wrong = tmp("wrong.npy");
    write_npy(&wrong, &[1, 3, 16, 16], &[0.0; 3 * 16 * 16]);
    let truncated = tmp("truncated.rsm");
    std::fs::write(&truncated, &std::fs::read(model).unwrap()[..1000]).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", model, "--input", wrong.to_str().unwrap(), "--output", "/dev/null"], "expects"),
        (vec!["inspect", truncated.to_str().unwrap()], "safetensors"),
        (vec!["inspect", "/no/such/model.rsm"], "opening"),
        (vec!["bench", "x.onnx"], "ONNX"),
        (vec!["inspect", "--arch", "resnet19"], "unknown architecture"),
        (vec!["bench", model, "--precision", "f32"], "int8 model"),
    ];
    for (args, needle) in cases {
        let o = resedge(&args);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: expected {needle:?} in:\n{err}");
        assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    }
}

#[test]
fn closed_pipe_is_not_a_crash() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_resedge"))
        .arg("zoo")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap(); // reader dropped: pipe closed
    let o = child.wait_with_output().unwrap();
    assert!(first.starts_with("name"), "{first}");
    assert!(o.status.success() && !stderr(&o).contains("panicked"), "{:?}: {}", o.status, stderr(&o));
}
