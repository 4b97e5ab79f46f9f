//! Device selection. The wheel's `libtorch_cuda.so` registers the CUDA backend from its static initializers,
//! but the linker drops it (nothing references its symbols), so it is `dlopen`ed before CUDA is queried.

use tch::Device;

/// Which device to train on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    /// CUDA device 0 when it can be loaded, else the CPU (with a log line saying why).
    Auto,
    Cpu,
    /// CUDA device 0; an error when unavailable.
    Cuda,
}

/// Loads libtorch's CUDA backend. Returns why it could not be loaded.
pub fn load_cuda() -> Result<(), String> {
    // SAFETY: loading libtorch_cuda runs its static initializers, which register the CUDA hooks with the
    // already loaded libtorch_cpu; that is what PyTorch itself does on `import torch`. The library is kept
    // loaded for the life of the process (never unloaded), so no code of it can dangle.
    let lib = unsafe {
        libloading::os::unix::Library::open(
            Some("libtorch_cuda.so"),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
        )
    };
    match lib {
        Ok(lib) => {
            std::mem::forget(lib);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Resolves `choice` to a device, printing the decision.
pub fn select(choice: Choice) -> anyhow::Result<Device> {
    if choice == Choice::Cpu {
        eprintln!("device: cpu (requested), {} threads", tch::get_num_threads());
        return Ok(Device::Cpu);
    }
    let why = match load_cuda() {
        Ok(()) if tch::Cuda::is_available() => {
            // Fixed input shapes: let cuDNN time its algorithms once per shape and keep the fastest.
            tch::Cuda::cudnn_set_benchmark(true);
            eprintln!(
                "device: cuda:0 ({} CUDA device(s), cuDNN {}, benchmark mode)",
                tch::Cuda::device_count(),
                if tch::Cuda::cudnn_is_available() { "available" } else { "missing" }
            );
            return Ok(Device::Cuda(0));
        }
        Ok(()) => "libtorch_cuda.so loaded but no CUDA device is visible".to_string(),
        Err(e) => format!("libtorch_cuda.so could not be loaded: {e}"),
    };
    if choice == Choice::Cuda {
        anyhow::bail!("CUDA requested but unavailable: {why}");
    }
    eprintln!("device: cpu ({why}); {} threads", tch::get_num_threads());
    Ok(Device::Cpu)
}
