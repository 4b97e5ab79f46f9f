//! Link settings for libtorch from the PyTorch wheel (see ../../shared/DESIGN.md §3): the wheel's libraries
//! reference CUDA symbols resolved only at run time, and `LIBTORCH/lib` goes on the run path so tests and
//! the binary find libtorch without LD_LIBRARY_PATH (which, when set, still wins).

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}/lib");
    }
}
