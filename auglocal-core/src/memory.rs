//! Process memory figures for metrics and benchmarks.

/// Peak resident set size of this process in bytes (`VmHWM` of `/proc/self/status`), or
/// `None` where the platform does not report it.
pub fn peak_rss_bytes() -> Option<u64> {
    status_field("VmHWM:")
}

/// Current resident set size in bytes (`VmRSS`).
pub fn current_rss_bytes() -> Option<u64> {
    status_field("VmRSS:")
}

fn status_field(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Resets the peak resident set size to the current one (Linux: writes `5` to
/// `/proc/self/clear_refs`), so a later [`peak_rss_bytes`] measures only what follows.
/// Returns false where the platform does not allow it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Bytes of GPU memory in use now and at most since the last [`reset_device_peak`], as
/// the CUDA driver counts them for the device's memory pool (Candle allocates every tensor
/// with `cuMemAllocAsync` from that pool). Like PyTorch's `max_memory_allocated`, this is
/// what tensors and workspaces hold, not what the pool keeps cached. `None` on the CPU,
/// without the `cuda` feature, or where the device has no memory pools.
pub fn device_memory(device: &candle_core::Device) -> Option<DeviceMemory> {
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(dev) = device {
        return cuda_pool::memory(dev);
    }
    let _ = device;
    None
}

/// Starts a new peak for [`device_memory`] at the memory in use now. Returns false where
/// there is nothing to reset (the CPU, no pools).
pub fn reset_device_peak(device: &candle_core::Device) -> bool {
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(dev) = device {
        return cuda_pool::reset_peak(dev);
    }
    let _ = device;
    false
}

/// GPU memory figures of [`device_memory`], in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Bytes of the pool in use now.
    pub in_use: u64,
    /// Most bytes in use at once since the last [`reset_device_peak`] (or since the pool
    /// was created).
    pub peak: u64,
}

#[cfg(feature = "cuda")]
mod cuda_pool {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    use candle_core::CudaDevice;

    use crate::memory::DeviceMemory;

    type Attribute = sys::CUmemPool_attribute;

    fn pool(dev: &CudaDevice) -> Option<sys::CUmemoryPool> {
        let stream = dev.cuda_stream();
        let context = stream.context();
        if !context.has_async_alloc() {
            return None;
        }
        context.bind_to_thread().ok()?;
        unsafe { result::device::get_mem_pool(context.cu_device()) }.ok()
    }

    fn read(pool: sys::CUmemoryPool, attribute: Attribute) -> Option<u64> {
        let mut value = 0u64;
        unsafe {
            result::mem_pool::get_attribute(pool, attribute, (&mut value as *mut u64).cast())
        }
        .ok()?;
        Some(value)
    }

    pub fn memory(dev: &CudaDevice) -> Option<DeviceMemory> {
        let pool = pool(dev)?;
        Some(DeviceMemory {
            in_use: read(pool, Attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?,
            peak: read(pool, Attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?,
        })
    }

    pub fn reset_peak(dev: &CudaDevice) -> bool {
        let Some(pool) = pool(dev) else {
            return false;
        };
        // The driver accepts only 0 for a high-water mark: it restarts at the current use.
        let mut zero = 0u64;
        unsafe {
            result::mem_pool::set_attribute(
                pool,
                Attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&mut zero as *mut u64).cast(),
            )
        }
        .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_has_no_device_memory_counters() {
        assert_eq!(device_memory(&candle_core::Device::Cpu), None);
        assert!(!reset_device_peak(&candle_core::Device::Cpu));
    }
}
