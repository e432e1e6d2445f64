// Hopper (sm_90a) FP16 matrix product for the GPU runner's few-token chain: out[M, N] = a[M, K] @ w[N, K]^T,
// float32 accumulation, with BERT's epilogues fused. Compiled at run time by NVRTC (sm90_gemm.py prepends the
// #defines and the wgmma call, whose PTX must name every accumulator register).
//
// Why it exists: the few-token forward (a few hundred rows) is a chain of 5-10 us kernels of which 2-3 us each are
// launch and ramp-up (PERF_NOTES.md, session 5). Chained by programmatic dependent launch (PDL), each kernel starts
// while its predecessor finishes; cuBLAS's kernels cannot be launched so, Triton's products are too slow at these
// sizes, hence this kernel. Its weights do not depend on the previous kernel, so the first stages of them are
// requested before it waits for that kernel.
//
// One CTA = one 128 x BLOCK_N output tile over one slice of K, three warpgroups:
//   warpgroup 0: producer. One thread streams 128 x 64 tiles of a and BLOCK_N x 64 tiles of w into a ring of
//                STAGES shared-memory stages with the tensor memory accelerator (TMA, 128-byte swizzle), each stage
//                completing on its "full" mbarrier.
//   warpgroups 1, 2: consumers, 64 rows each. wgmma m64 x BLOCK_N x k16 from the shared-memory stages straight
//                into float32 registers; a stage is handed back on its "empty" mbarrier once its wgmmas retired.
// Epilogues (EPILOGUE), applied after the tile went through shared memory so that global memory sees whole 16-byte
// vectors of consecutive columns:
//   0 EPI_BIAS       out = acc + bias                      (float16)
//   1 EPI_GELU_ERF   out = gelu_erf(acc + bias)
//   2 EPI_GELU_TANH  out = gelu_tanh(acc + bias)
//   3 EPI_PARTIALS   out[split] = acc, float32             (split-K slices that the next LayerNorm sums with the
//                                                           bias and the residual)

typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned short f16;

#define BLOCK_M 128
#define BLOCK_K 64
#define THREADS 384
#define A_STAGE_BYTES (BLOCK_M * BLOCK_K * 2)
#define W_STAGE_BYTES (BLOCK_N * BLOCK_K * 2)
#define STAGE_BYTES (A_STAGE_BYTES + W_STAGE_BYTES)
#define ACC (BLOCK_N / 2)   // float32 accumulators per consumer thread: 64 x BLOCK_N over 128 threads
#define ROW (BLOCK_N + 8)   // floats per row of the tile staged for the epilogue (+8: no bank conflicts)

struct __align__(64) TensorMap { u64 raw[16]; };   // CUtensorMap: opaque, 128 bytes, encoded on the host

__device__ __forceinline__ u32 shared_address(const void* p) {
    u32 address;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(address) : "l"(p));
    return address;
}

__device__ __forceinline__ void barrier_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" :: "r"(bar), "r"(count));
}

__device__ __forceinline__ void barrier_expect_bytes(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(bar), "r"(bytes) : "memory");
}

__device__ __forceinline__ void barrier_arrive(u32 bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" :: "r"(bar) : "memory");
}

__device__ __forceinline__ void barrier_wait(u32 bar, u32 parity) {
    asm volatile(
        "{\n"
        ".reg .pred done;\n"
        "WAIT:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra WAIT;\n"
        "}\n" :: "r"(bar), "r"(parity) : "memory");
}

// TMA: the box of the tensor map at (column c0, row c1) into shared memory, completing on bar.
__device__ __forceinline__ void tma_load(u32 dst, const TensorMap* map, u32 bar, int c0, int c1) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];"
        :: "r"(dst), "l"(map), "r"(bar), "r"(c0), "r"(c1) : "memory");
}

// wgmma shared-memory matrix descriptor of a K-major tile whose rows are 128 bytes (64 halves) with the 128-byte
// swizzle TMA wrote: stride between 8-row core-matrix groups 1024 bytes; the leading offset is unused there.
__device__ __forceinline__ u64 matrix_descriptor(u32 address) {
    return (u64)((address & 0x3FFFF) >> 4) | ((u64)1 << 16) | ((u64)(1024 >> 4) << 32) | ((u64)1 << 62);
}

__device__ __forceinline__ float half_to_float(f16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u32 pack_halves(float lo, float hi) {
    u32 packed;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(hi), "f"(lo));
    return packed;
}

__device__ __forceinline__ float epilogue(float v) {
#if EPILOGUE == 1
    return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
#elif EPILOGUE == 2   // the hardware tanh (relative error ~2^-11, below FP16's rounding): 1 instruction, not ~20
    float t;
    asm("tanh.approx.f32 %0, %1;" : "=f"(t) : "f"(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    return 0.5f * v * (1.0f + t);
#else
    return v;
#endif
}

extern "C" __global__ void __launch_bounds__(THREADS, 1)
sm90_gemm(const __grid_constant__ TensorMap map_a, const __grid_constant__ TensorMap map_w,
          const f16* __restrict__ bias, void* out, int M, int N, int k_blocks, int splits)
{
    extern __shared__ unsigned char shared_raw[];
    const u32 stages = (shared_address(shared_raw) + 1023) & ~1023u;   // 128-byte swizzle wants 1024-byte alignment
    const u32 full = stages + STAGES * STAGE_BYTES, empty = full + 8 * STAGES;
    const int n0 = blockIdx.x * BLOCK_N, m0 = blockIdx.y * BLOCK_M, split = blockIdx.z;
    const int kb_begin = split * k_blocks / splits, kb_count = (split + 1) * k_blocks / splits - kb_begin;
    const int warpgroup = threadIdx.x / 128;

    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; ++s) {
            barrier_init(full + 8 * s, 1);
            barrier_init(empty + 8 * s, 2);   // one arrival per consumer warpgroup
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();

    if (warpgroup == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
        if (threadIdx.x == 0) {
            const int first = kb_count < STAGES ? kb_count : STAGES;
            for (int i = 0; i < first; ++i) {   // weights before the wait: no kernel before this one writes them
                barrier_expect_bytes(full + 8 * i, STAGE_BYTES);
                tma_load(stages + i * STAGE_BYTES + A_STAGE_BYTES, &map_w, full + 8 * i, (kb_begin + i) * BLOCK_K, n0);
            }
            asm volatile("griddepcontrol.wait;" ::: "memory");
            for (int i = 0; i < kb_count; ++i) {
                const int s = i % STAGES;
                const u32 stage = stages + s * STAGE_BYTES, bar = full + 8 * s;
                const int k = (kb_begin + i) * BLOCK_K;
                if (i >= STAGES) {
                    barrier_wait(empty + 8 * s, ((i / STAGES) - 1) & 1);
                    barrier_expect_bytes(bar, STAGE_BYTES);
                    tma_load(stage + A_STAGE_BYTES, &map_w, bar, k, n0);
                }
                tma_load(stage, &map_a, bar, k, m0);
            }
        }
        return;
    }

    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
    asm volatile("griddepcontrol.wait;" ::: "memory");   // the epilogue reads and writes what earlier kernels use
    const int consumer = warpgroup - 1;
    // the epilogue's columns: each thread owns 8 consecutive ones of the tile (16-byte vectors of the output)
    const int lanes_per_row = BLOCK_N / 8, t = threadIdx.x % 128, c = 8 * (t % lanes_per_row);
    const int col = n0 + c;
#if EPILOGUE <= 2
    const uint4 bias_words = *(const uint4*)(bias + col);   // requested now, used after the main loop
#endif
    float acc[ACC];
    for (int i = 0; i < kb_count; ++i) {
        const int s = i % STAGES;
        barrier_wait(full + 8 * s, (i / STAGES) & 1);
        const u64 a_desc = matrix_descriptor(stages + s * STAGE_BYTES + consumer * (64 * 128));
        const u64 w_desc = matrix_descriptor(stages + s * STAGE_BYTES + A_STAGE_BYTES);
        asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#pragma unroll
        for (int kk = 0; kk < BLOCK_K / 16; ++kk)   // k16 steps: 32 bytes further along the swizzled rows
            wgmma_m64k16(acc, a_desc + 2 * kk, w_desc + 2 * kk, (i > 0 || kk > 0) ? 1 : 0);
        asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory");   // the previous stage's wgmmas are done
        if (i > 0 && threadIdx.x % 128 == 0)
            barrier_arrive(empty + 8 * ((i - 1) % STAGES));
    }
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;");

    // The accumulators go through shared memory (the pipeline stages are free once both consumers' wgmmas have
    // retired: hence the barrier) so that global memory sees whole 16-byte vectors of consecutive columns: the wgmma
    // register layout would store 4-byte pieces of 8 different rows per warp instruction.
    const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
    asm volatile("bar.sync 1, 256;" ::: "memory");
    float* staged = (float*)(shared_raw + (stages - shared_address(shared_raw))) + consumer * 64 * ROW;
#pragma unroll
    for (int j = 0; j < ACC / 4; ++j)
#pragma unroll
        for (int half = 0; half < 2; ++half)
            *(float2*)(staged + (warp * 16 + lane / 4 + 8 * half) * ROW + 8 * j + 2 * (lane % 4)) =
                make_float2(acc[4 * j + 2 * half], acc[4 * j + 2 * half + 1]);
    if (consumer == 0)
        asm volatile("bar.sync 2, 128;" ::: "memory");
    else
        asm volatile("bar.sync 3, 128;" ::: "memory");

#if EPILOGUE <= 2
    float b[8];
    {
        const u32 words[4] = {bias_words.x, bias_words.y, bias_words.z, bias_words.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            b[2 * i] = half_to_float((f16)(words[i] & 0xFFFF));
            b[2 * i + 1] = half_to_float((f16)(words[i] >> 16));
        }
    }
#endif
#pragma unroll
    for (int r = t / lanes_per_row; r < 64; r += 128 / lanes_per_row) {
        const int row = m0 + consumer * 64 + r;
        if (row >= M)
            continue;
        const float4 lo = *(const float4*)(staged + r * ROW + c), hi = *(const float4*)(staged + r * ROW + c + 4);
#if EPILOGUE == 3
        float4* dst = (float4*)((float*)out + ((size_t)split * M + row) * N + col);
        dst[0] = lo;
        dst[1] = hi;
#else
        float v[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
        for (int i = 0; i < 8; ++i)
            v[i] = epilogue(v[i] + b[i]);
        *(uint4*)((f16*)out + (size_t)row * N + col) =
            make_uint4(pack_halves(v[0], v[1]), pack_halves(v[2], v[3]), pack_halves(v[4], v[5]),
                       pack_halves(v[6], v[7]));
#endif
    }
}
