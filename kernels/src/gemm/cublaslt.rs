//! cuBLASLt products on cubecl's CUDA tensors, enqueued on the stream that owns the output (the
//! vendored cubecl-cuda names it, `patches/vendor/cubecl-cuda`), so they run in order with
//! cubecl's kernels and no host sync is needed.
//!
//! Row-major `C[m, n] = A[m, k] B[k, n]` is column-major `C^T = B^T A^T`: cuBLASLt's first
//! operand is `rhs` and its second `lhs`. An operand whose last dimension is unit-stride is read
//! as is, one whose second-to-last is (a transposed view, as the backward's `x^T` and `W^T`) with
//! the transpose flag; anything else is copied contiguous first. Batch dimensions become one
//! strided batch (stride 0 for an operand that broadcasts). The descriptors and the algorithm
//! that cuBLASLt's heuristic picks are cached per shape on each thread.

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use burn::tensor::{DType, Shape};
use burn_cubecl::{
    kernel::into_contiguous, ops::numeric::empty_device_contiguous_dtype, tensor::CubeTensor,
    CubeRuntime,
};
use cubecl::cuda::CudaRuntime;
use cudarc::cublaslt::{result as lt, sys};

use super::{mode, output_shape, GemmMode};

type CudaTensor = CubeTensor<CudaRuntime>;

/// The workspace cuBLASLt may use per product (NVIDIA's recommendation for Hopper).
const WORKSPACE_BYTES: usize = 32 << 20;

/// cuBLASLt products launched by this process: what the tests and the training log read to
/// see that the products took this path.
pub fn launches() -> u64 {
    LAUNCHES.load(Ordering::Relaxed)
}

static LAUNCHES: AtomicU64 = AtomicU64::new(0);

/// `lhs @ rhs` through cuBLASLt; the operands come back unchanged when the runtime is not CUDA,
/// the mode is `burn`, the library is missing, or the product is one this path does not take
/// (operands of different or non-float dtypes, or a batch dimension broadcast in part).
#[allow(clippy::result_large_err)] // `Err` hands the operands back (a move, not an error value)
pub fn try_gemm<R: CubeRuntime>(
    lhs: CubeTensor<R>,
    rhs: CubeTensor<R>,
) -> Result<CubeTensor<R>, (CubeTensor<R>, CubeTensor<R>)> {
    if mode() == GemmMode::Burn || !library_present() {
        return Err((lhs, rhs));
    }
    let operands: Box<dyn Any> = Box::new((lhs, rhs));
    let (lhs, rhs) = match operands.downcast::<(CudaTensor, CudaTensor)>() {
        Ok(pair) => *pair,
        Err(other) => return Err(*other.downcast().expect("operands of runtime R")),
    };
    let result: Box<dyn Any> = match gemm(lhs, rhs) {
        Ok(out) => {
            return Ok(*(Box::new(out) as Box<dyn Any>)
                .downcast()
                .expect("R is CUDA"))
        }
        Err(pair) => Box::new(pair),
    };
    Err(*result.downcast().expect("R is CUDA"))
}

/// Whether `libcublasLt` loads; a missing library leaves every product on Burn's matmul, with
/// one warning.
fn library_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        // SAFETY: only tries to open the library by its candidate names.
        let present = unsafe { sys::is_culib_present() };
        if !present {
            eprintln!(
                "warning: libcublasLt was not found (add the CUDA libraries to \
                 LD_LIBRARY_PATH); matrix products run on Burn's matmul instead"
            );
        }
        present
    })
}

/// How one operand is read: a column-major `rows x cols` matrix with leading dimension `ld`,
/// transposed or not, `batch_stride` elements apart in the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct View {
    rows: u64,
    cols: u64,
    ld: i64,
    trans: bool,
    batch_stride: i64,
}

/// The view of a row-major `[.., r, c]` operand as cuBLASLt reads it, or `None` when its strides
/// need a contiguous copy. `batch` is the product's batch shape.
fn view(t: &CudaTensor, batch: &[usize]) -> Option<View> {
    let shape = t.meta.shape();
    let strides = t.meta.strides();
    let rank = shape.num_dims();
    let (r, c) = (shape[rank - 2], shape[rank - 1]);
    let (sr, sc) = (strides[rank - 2], strides[rank - 1]);
    let (rows, cols, ld, trans) = if sc == 1 && (sr >= c.max(1) || r == 1) {
        (c, r, sr.max(c.max(1)), false)
    } else if sr == 1 && (sc >= r.max(1) || c == 1) {
        (r, c, sc.max(r.max(1)), true)
    } else {
        return None;
    };
    let batch_stride = batch_stride(&shape.as_slice()[..rank - 2], &strides[..rank - 2], batch)?;
    Some(View {
        rows: rows as u64,
        cols: cols as u64,
        ld: ld as i64,
        trans,
        batch_stride,
    })
}

/// One stride for the operand's batch dimensions taken together: 0 when it broadcasts over
/// all of them, the innermost batch stride when they are laid out as one, else `None`.
fn batch_stride(shape: &[usize], strides: &[usize], batch: &[usize]) -> Option<i64> {
    if shape.iter().all(|&d| d == 1) {
        return Some(0);
    }
    if shape != batch {
        return None;
    }
    let live: Vec<usize> = (0..shape.len()).filter(|&i| shape[i] > 1).collect();
    for pair in live.windows(2) {
        let (outer, inner) = (pair[0], pair[1]);
        if strides[outer] != strides[inner] * shape[inner] {
            return None;
        }
    }
    Some(live.last().map_or(0, |&i| strides[i] as i64))
}

/// The view of `t`, copying it contiguous first when its strides are not ones cuBLASLt reads.
fn prepared(t: CudaTensor, batch: &[usize]) -> Option<(CudaTensor, View)> {
    if let Some(v) = view(&t, batch) {
        return Some((t, v));
    }
    let t = into_contiguous(t);
    let v = view(&t, batch)?;
    Some((t, v))
}

/// The cuBLASLt types of one dtype: the matrices' and the compute type.
fn types(dtype: DType) -> Option<(sys::cudaDataType, sys::cublasComputeType_t)> {
    use sys::cublasComputeType_t::*;
    use sys::cudaDataType::*;
    match dtype {
        DType::BF16 => Some((CUDA_R_16BF, CUBLAS_COMPUTE_32F)),
        DType::F16 => Some((CUDA_R_16F, CUBLAS_COMPUTE_32F)),
        DType::F32 => Some((CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32)),
        _ => None,
    }
}

/// What the cached plan of one product depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    dtype: DType,
    a: View,
    b: View,
    d: View,
    batch: u64,
    /// The largest power of two (at most 256) dividing each pointer, A, B, D.
    align: [u32; 3],
}

/// A product's descriptors and algorithm (`None`: cuBLASLt has none for it).
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    d: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

/// This thread's cuBLASLt handle, workspace and plans. Never freed: they live as long as the
/// thread's CUDA context.
struct Library {
    handle: sys::cublasLtHandle_t,
    workspace: u64,
    plans: HashMap<Key, Option<Plan>>,
}

thread_local! {
    static LIBRARY: RefCell<Option<Library>> = const { RefCell::new(None) };
}

/// `lhs @ rhs` on cuBLASLt, or the operands back when this path does not take them.
// `result_large_err` as `try_gemm`; `manual_contains`: the form that ran on the GPU, kept as is.
#[allow(clippy::result_large_err, clippy::manual_contains)]
fn gemm(lhs: CudaTensor, rhs: CudaTensor) -> Result<CudaTensor, (CudaTensor, CudaTensor)> {
    let dtype = lhs.dtype;
    let rank = lhs.meta.shape().num_dims();
    if dtype != rhs.dtype || types(dtype).is_none() || rank < 2 {
        return Err((lhs, rhs));
    }
    let out_shape: Shape = output_shape(lhs.meta.shape(), rhs.meta.shape());
    let batch: Vec<usize> = out_shape.as_slice()[..rank - 2].to_vec();
    let partial = |t: &CudaTensor| {
        let dims = &t.meta.shape().as_slice()[..rank - 2];
        dims.iter().any(|&d| d == 1) && dims.iter().any(|&d| d != 1) && dims != batch.as_slice()
    };
    if partial(&lhs) || partial(&rhs) {
        return Err((lhs, rhs));
    }
    let (lhs, a_lhs) = prepared(lhs, &batch).expect("a contiguous operand has a view");
    let (rhs, a_rhs) = prepared(rhs, &batch).expect("a contiguous operand has a view");
    let (m, n) = (out_shape[rank - 2], out_shape[rank - 1]);
    let out = empty_device_contiguous_dtype(
        lhs.client.clone(),
        lhs.device.clone(),
        out_shape.clone(),
        dtype,
    );
    let count: usize = batch.iter().product();
    if m * n * count == 0 {
        return Ok(out);
    }
    let d = View {
        rows: n as u64,
        cols: m as u64,
        ld: n as i64,
        trans: false,
        batch_stride: (m * n) as i64,
    };
    let resource = |t: &CudaTensor| {
        t.client
            .get_resource(t.handle.clone())
            .expect("cuBLASLt: a CUDA tensor's memory")
    };
    // Inputs first: fetching them orders the output's stream after their writers.
    let (a_res, b_res, d_res) = (resource(&rhs), resource(&lhs), resource(&out));
    let stream = d_res.resource().stream;
    let (a_ptr, b_ptr, d_ptr) = (
        a_res.resource().ptr,
        b_res.resource().ptr,
        d_res.resource().ptr,
    );
    let k = lhs.meta.shape()[rank - 1];
    let key = Key {
        dtype,
        a: a_rhs,
        b: a_lhs,
        d,
        batch: count as u64,
        align: [a_ptr, b_ptr, d_ptr].map(alignment),
    };
    let launched = LIBRARY.with(|cell| {
        let mut cell = cell.borrow_mut();
        let library = cell.get_or_insert_with(Library::new);
        let (handle, workspace) = (library.handle, library.workspace);
        let Some(plan) = library.plan(key) else {
            return false;
        };
        let (alpha, beta) = (1f32, 0f32);
        // SAFETY: the pointers are live cubecl allocations of the shapes the layouts describe
        // (held by the `ManagedResource`s until after the launch), the layouts and the algorithm
        // were made for this key, and the call is enqueued on the output's stream, after the
        // inputs' writers and before any later reader or reuse of these buffers.
        unsafe {
            lt::matmul(
                handle,
                plan.desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                a_ptr as *const c_void,
                plan.a,
                b_ptr as *const c_void,
                plan.b,
                d_ptr as *const c_void,
                plan.d,
                d_ptr as *mut c_void,
                plan.d,
                &plan.algo,
                workspace as *mut c_void,
                WORKSPACE_BYTES,
                stream as sys::cudaStream_t,
            )
            .unwrap_or_else(|err| {
                panic!("cuBLASLt matmul failed ({err:?}, m={m} n={n} k={k}); SCALELAB_GEMM=burn runs Burn's matmul instead")
            });
        }
        LAUNCHES.fetch_add(1, Ordering::Relaxed);
        true
    });
    drop((a_res, b_res, d_res));
    if launched {
        Ok(out)
    } else {
        Err((lhs, rhs))
    }
}

/// The largest power of two, at most 256, that divides `ptr`: cuBLASLt assumes 256-byte aligned
/// operands unless told otherwise, and a slice's pointer may be less aligned.
fn alignment(ptr: u64) -> u32 {
    1 << ptr.trailing_zeros().min(8)
}

impl Library {
    fn new() -> Self {
        let handle = lt::create_handle()
            .unwrap_or_else(|err| panic!("cuBLASLt: cannot create a handle ({err:?})"));
        // SAFETY: a plain device allocation in the current (cubecl's primary) context.
        let workspace = unsafe { cudarc::driver::result::malloc_sync(WORKSPACE_BYTES) }
            .unwrap_or_else(|err| panic!("cuBLASLt: cannot allocate its workspace ({err:?})"));
        Self {
            handle,
            workspace,
            plans: HashMap::new(),
        }
    }

    /// The plan for `key`, made on first use.
    fn plan(&mut self, key: Key) -> Option<&Plan> {
        let handle = self.handle;
        self.plans
            .entry(key)
            .or_insert_with(|| make_plan(handle, key))
            .as_ref()
    }
}

/// The descriptors of `key`'s product and the algorithm cuBLASLt's heuristic ranks first, or
/// `None` when it offers none.
fn make_plan(handle: sys::cublasLtHandle_t, key: Key) -> Option<Plan> {
    let (data, compute) = types(key.dtype)?;
    let set_layout_batch = |layout, stride: i64| {
        if key.batch > 1 {
            let count = key.batch as i32;
            // SAFETY: a live layout, attributes of the documented types (i32, i64).
            unsafe {
                lt::set_matrix_layout_attribute(
                    layout,
                    sys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                    &count as *const i32 as *const c_void,
                    4,
                )
                .ok()?;
                lt::set_matrix_layout_attribute(
                    layout,
                    sys::cublasLtMatrixLayoutAttribute_t::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                    &stride as *const i64 as *const c_void,
                    8,
                )
                .ok()?;
            }
        }
        Some(layout)
    };
    let layout = |v: View| {
        // cuBLASLt's layout is of the stored matrix: `rows x cols` before the transpose.
        let layout = lt::create_matrix_layout(data, v.rows, v.cols, v.ld).ok()?;
        set_layout_batch(layout, v.batch_stride)
    };
    let (a, b, d) = (layout(key.a)?, layout(key.b)?, layout(key.d)?);
    let desc = lt::create_matmul_desc(compute, sys::cudaDataType::CUDA_R_32F).ok()?;
    let workspace = WORKSPACE_BYTES as u64;
    // SAFETY: live descriptors, attributes of the documented types.
    unsafe {
        for (attr, trans) in [
            (
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                key.a.trans,
            ),
            (
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
                key.b.trans,
            ),
        ] {
            // cublasOperation_t: 0 is N, 1 is T.
            let op = trans as i32;
            lt::set_matmul_desc_attribute(desc, attr, &op as *const i32 as *const c_void, 4)
                .ok()?;
        }
        let pref = lt::create_matmul_pref().ok()?;
        lt::set_matmul_pref_attribute(
            pref,
            sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
            &workspace as *const u64 as *const c_void,
            8,
        )
        .ok()?;
        for (attr, align) in [
            sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
            sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
            sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
            sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
        ]
        .into_iter()
        .zip([key.align[0], key.align[1], key.align[2], key.align[2]])
        {
            lt::set_matmul_pref_attribute(pref, attr, &align as *const u32 as *const c_void, 4)
                .ok()?;
        }
        let heuristic = lt::get_matmul_algo_heuristic(handle, desc, a, b, d, d, pref).ok();
        let _ = lt::destroy_matmul_pref(pref);
        Some(Plan {
            desc,
            a,
            b,
            d,
            algo: heuristic?.algo,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::batch_stride;

    #[test]
    fn batch_dimensions_collapse_to_one_stride_or_broadcast() {
        // [2, 3, m, k] contiguous with m*k = 20: strides [60, 20].
        assert_eq!(batch_stride(&[2, 3], &[60, 20], &[2, 3]), Some(20));
        // Broadcast over all batch dimensions.
        assert_eq!(batch_stride(&[1, 1], &[0, 0], &[2, 3]), Some(0));
        // A permuted batch cannot be one stride.
        assert_eq!(batch_stride(&[2, 3], &[20, 40], &[2, 3]), None);
        // Size-1 dimensions in between do not matter.
        assert_eq!(batch_stride(&[2, 1, 3], &[60, 7, 20], &[2, 1, 3]), Some(20));
    }
}
