// metal_shim.hpp — the subset of Metal Shading Language that gradforge's Metal backend emits,
// as plain C++20, so that the generated `.metal` kernels compile with g++/clang on Linux and run
// on the CPU for verification. It is NOT a Metal implementation: see docs/backends/metal.md for
// what this cannot catch.
//
// What it provides
//   * address-space words: `device`, `constant`, `thread` (no-ops or `const`) and
//     `threadgroup` (kernel-scope arrays shared by the threads of the running threadgroup);
//   * `kernel`, and the attributes `[[buffer(n)]]`, `[[thread_position_in_grid]]`, … which
//     expand to the empty attribute list `[[]]` (so -Wattributes stays on for anything else);
//   * float math in namespace `metal` (exp, log, sin, cos, tan, tanh, sqrt, rsqrt, pow, fabs,
//     abs, sign, isnan, fmin, fmax, min, max, clamp, select), `metal::mem_flags`,
//     `threadgroup_barrier` and `simd_sum`;
//   * `double` is poisoned: any use in kernel code is a compile error (Metal has no double).
//
// How kernels run (gf_shim::dispatch)
//   Threadgroups run one after another. The threads of a threadgroup are stackful coroutines
//   (POSIX ucontext) driven by a deterministic cooperative scheduler on one OS thread: in each
//   pass every runnable thread runs, in a fixed order, until it reaches a threadgroup_barrier or
//   a simd_sum, or returns. A barrier releases only when every thread of the group is waiting at
//   the same barrier call (same call site, same count); a simd_sum releases when every live lane
//   of the simdgroup has reached it, one simdgroup per round, so that simdgroups drift apart as
//   far as the barriers allow (as they may on a GPU). Anything else — a thread returning while others wait at a
//   barrier, threads waiting at different barriers, a deadlock — aborts with a message.
//   Before each threadgroup starts, its threadgroup memory is filled with NaN bytes (0xFF), and
//   the fixed run order (GF_SHIM_ORDER=ascending|descending) makes a missing barrier read
//   poisoned or stale values deterministically instead of "usually working".
//
// Environment
//   GF_SHIM_ORDER        ascending (default) or descending: order of threads within a pass
//   GF_SHIM_SIMD_WIDTH   threads per simdgroup (default 32, as on Apple GPUs)
//   GF_SHIM_STACK_KB     stack per simulated thread in KiB (default 512)
//
// Requires: C++20, POSIX ucontext + mmap (Linux/glibc), an ELF linker that defines
// __start_/__stop_ symbols for named sections (GNU ld, gold, lld).
#pragma once

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <sys/mman.h>
#include <sys/types.h>
#include <ucontext.h>
#include <unistd.h>

// Metal's float infinity (metal_math); gradforge prints constants beyond FLT_MAX as it.
#ifndef INFINITY
#define INFINITY __builtin_inff()
#endif

typedef unsigned int uint;
typedef unsigned short ushort;
typedef unsigned char uchar;

// -------------------------------------------------------------------------------- metal::
namespace metal {

enum class mem_flags : unsigned { mem_none = 0, mem_device = 1, mem_threadgroup = 2,
                                  mem_texture = 4 };

// Compiler builtins (the C library's float functions) keep <cmath> out of the build.
inline float exp(float x) { return __builtin_expf(x); }
inline float log(float x) { return __builtin_logf(x); }
inline float sin(float x) { return __builtin_sinf(x); }
inline float cos(float x) { return __builtin_cosf(x); }
inline float tan(float x) { return __builtin_tanf(x); }
inline float tanh(float x) { return __builtin_tanhf(x); }
inline float sqrt(float x) { return __builtin_sqrtf(x); }
inline float rsqrt(float x) { return 1.0f / __builtin_sqrtf(x); }
inline float pow(float x, float y) { return __builtin_powf(x, y); }
inline float powr(float x, float y) { return __builtin_powf(x, y); }
inline float fabs(float x) { return __builtin_fabsf(x); }
inline float abs(float x) { return __builtin_fabsf(x); }
inline float fmin(float x, float y) { return __builtin_fminf(x, y); }
inline float fmax(float x, float y) { return __builtin_fmaxf(x, y); }
inline float min(float x, float y) { return __builtin_fminf(x, y); }
inline float max(float x, float y) { return __builtin_fmaxf(x, y); }
inline uint min(uint x, uint y) { return x < y ? x : y; }
inline uint max(uint x, uint y) { return x > y ? x : y; }
inline float clamp(float x, float lo, float hi) { return __builtin_fminf(__builtin_fmaxf(x, lo), hi); }
inline float select(float a, float b, bool c) { return c ? b : a; }
inline bool isnan(float x) { return __builtin_isnan(x); }
/// Metal's sign: 1 for x > 0, -1 for x < 0, 0 for ±0 (and NaN).
inline float sign(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f); }

// The extra defaulted arguments record the call site (source file and line of the call), so
// the scheduler can tell one barrier from another whatever the optimizer does to the code.
void threadgroup_barrier(mem_flags flags, const char* file = __builtin_FILE(),
                         int line = __builtin_LINE());
float simd_sum(float value, const char* file = __builtin_FILE(), int line = __builtin_LINE());

}  // namespace metal

// -------------------------------------------------------------------------------- scheduler
extern "C" {
// Bounds of the section that holds every `threadgroup` variable (defined by the linker when
// the section exists; weak so that a program without threadgroup memory still links).
extern char __start_gf_threadgroup[] __attribute__((weak));
extern char __stop_gf_threadgroup[] __attribute__((weak));
}

namespace gf_shim {

/// The position arguments of one simulated GPU thread (1-D grids).
struct thread_info {
    uint grid_pos;      // [[thread_position_in_grid]]
    uint tg_index;      // [[thread_index_in_threadgroup]] == [[thread_position_in_threadgroup]]
    uint group;         // [[threadgroup_position_in_grid]]
    uint tg_size;       // [[threads_per_threadgroup]]
    uint groups;        // [[threadgroups_per_grid]]
    uint grid_size;     // [[threads_per_grid]]
    uint simd_lane;     // [[thread_index_in_simdgroup]]
    uint simd_group;    // [[simdgroup_index_in_threadgroup]]
    uint simd_width;    // [[threads_per_simdgroup]]
    uint simd_groups;   // [[simdgroups_per_threadgroup]]
};

/// Reports a violation of Metal's rules (or a shim failure) and exits with status 70.
[[noreturn]] __attribute__((format(printf, 1, 2))) inline void fatal(const char* format, ...) {
    std::va_list args;
    va_start(args, format);
    std::fputs("gf_shim: ", stderr);
    std::vfprintf(stderr, format, args);
    std::fputs("\n", stderr);
    va_end(args);
    std::fflush(stderr);
    std::_Exit(70);
}

inline long env_long(const char* name, long fallback) {
    const char* text = std::getenv(name);
    if (text == nullptr || *text == '\0') return fallback;
    char* end = nullptr;
    long value = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || value <= 0) fatal("bad value for %s", name);
    return value;
}

inline bool descending_order() {
    const char* text = std::getenv("GF_SHIM_ORDER");
    if (text == nullptr || *text == '\0' || std::strcmp(text, "ascending") == 0) return false;
    if (std::strcmp(text, "descending") == 0) return true;
    fatal("GF_SHIM_ORDER must be ascending or descending");
}

inline uint simd_width() { return static_cast<uint>(env_long("GF_SHIM_SIMD_WIDTH", 32)); }

enum class lane_state { runnable, at_barrier, at_simd, finished };

struct lane {
    ucontext_t context;
    lane_state state = lane_state::runnable;
    const char* file = nullptr;          // call site of the barrier / simd_sum it waits at
    int line = 0;
    unsigned long long barriers = 0;     // threadgroup_barrier calls so far
    unsigned long long simds = 0;        // simd_sum calls so far
    float simd_in = 0.0f;
    float simd_out = 0.0f;
};

struct group_run {
    void (*call)(const void* body, const thread_info& info) = nullptr;
    const void* body = nullptr;
    std::vector<lane> lanes;
    std::vector<thread_info> infos;
    ucontext_t scheduler;
    uint current = 0;
    bool descending = false;
};

inline group_run*& active_group() {
    static group_run* group = nullptr;
    return group;
}

/// Stacks for the simulated threads, reused between dispatches (each with a guard page).
struct stack_pool {
    std::size_t size = 0;
    std::vector<char*> stacks;

    char* get(std::size_t index) {
        if (size == 0) {
            long page = sysconf(_SC_PAGESIZE);
            size = static_cast<std::size_t>(env_long("GF_SHIM_STACK_KB", 512)) * 1024u;
            size = (size + static_cast<std::size_t>(page) - 1) / static_cast<std::size_t>(page)
                   * static_cast<std::size_t>(page);
        }
        while (stacks.size() <= index) {
            long page = sysconf(_SC_PAGESIZE);
            std::size_t total = size + static_cast<std::size_t>(page);
            void* memory = mmap(nullptr, total, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (memory == MAP_FAILED) fatal("cannot allocate a stack for a simulated thread");
            if (mprotect(memory, static_cast<std::size_t>(page), PROT_NONE) != 0) {
                fatal("cannot protect a stack guard page");
            }
            stacks.push_back(static_cast<char*>(memory) + page);
        }
        return stacks[index];
    }
};

inline stack_pool& stacks() {
    static stack_pool pool;
    return pool;
}

inline void lane_entry() {
    group_run* group = active_group();
    uint me = group->current;
    group->call(group->body, group->infos[me]);
    group->lanes[me].state = lane_state::finished;
    // returning resumes uc_link, the scheduler
}

inline void yield_to_scheduler() {
    group_run* group = active_group();
    lane& me = group->lanes[group->current];
    if (swapcontext(&me.context, &group->scheduler) != 0) fatal("swapcontext failed");
}

inline lane& current_lane(const char* what) {
    group_run* group = active_group();
    if (group == nullptr) fatal("%s called outside a kernel dispatch", what);
    return group->lanes[group->current];
}

inline bool same_site(const lane& a, const lane& b) {
    return a.line == b.line && std::strcmp(a.file, b.file) == 0;
}


/// Release the lanes waiting at a simd_sum / barrier when the rules allow; false if none.
/// Only one simdgroup's simd_sum is released per round (the first ready one in run order), so
/// that simdgroup runs ahead of the others as far as it can: the largest skew a GPU may show
/// between simdgroups, which exposes races between them (e.g. a missing barrier between one
/// simdgroup reading threadgroup memory and another overwriting it).
inline bool release(group_run& group) {
    const uint size = static_cast<uint>(group.lanes.size());
    const uint width = group.infos.empty() ? 1u : group.infos[0].simd_width;
    const uint simdgroups = (size + width - 1) / width;
    for (uint k = 0; k < simdgroups; ++k) {
        const uint first = (group.descending ? simdgroups - 1 - k : k) * width;
        const uint last = first + width < size ? first + width : size;
        uint at_simd = 0, waiting_elsewhere = 0;
        for (uint t = first; t < last; ++t) {
            if (group.lanes[t].state == lane_state::at_simd) ++at_simd;
            else if (group.lanes[t].state != lane_state::finished) ++waiting_elsewhere;
        }
        if (at_simd == 0 || waiting_elsewhere != 0) continue;
        const lane* model = nullptr;
        float total = 0.0f;
        for (uint t = first; t < last; ++t) {
            const lane& l = group.lanes[t];
            if (l.state != lane_state::at_simd) continue;
            if (model == nullptr) model = &l;
            else if (!same_site(l, *model) || l.simds != model->simds) {
                fatal("lanes of simdgroup %u are waiting at different simd_sum calls "
                      "(%s:%d and %s:%d): divergent control flow", first / width,
                      model->file, model->line, l.file, l.line);
            }
            total += l.simd_in;   // fixed lane order: deterministic
        }
        for (uint t = first; t < last; ++t) {
            lane& l = group.lanes[t];
            if (l.state != lane_state::at_simd) continue;
            l.simd_out = total;
            l.state = lane_state::runnable;
        }
        return true;
    }
    uint at_barrier = 0, finished = 0;
    const lane* model = nullptr;
    for (const lane& l : group.lanes) {
        if (l.state == lane_state::finished) { ++finished; continue; }
        if (l.state != lane_state::at_barrier) return false;   // someone waits at a simd_sum
        ++at_barrier;
        if (model == nullptr) model = &l;
        else if (!same_site(l, *model) || l.barriers != model->barriers) {
            fatal("threads of threadgroup %u are waiting at different threadgroup_barrier "
                  "calls (%s:%d, call %llu, and %s:%d, call %llu): a barrier inside divergent "
                  "control flow", group.infos[0].group, model->file, model->line,
                  model->barriers, l.file, l.line, l.barriers);
        }
    }
    if (at_barrier == 0) return false;
    if (finished != 0) {
        fatal("threadgroup_barrier at %s:%d reached by %u of %u threads of threadgroup %u; "
              "the others returned first", model->file, model->line, at_barrier, size,
              group.infos[0].group);
    }
    for (lane& l : group.lanes) l.state = lane_state::runnable;
    return true;
}

inline void poison_threadgroup_memory() {
    if (__start_gf_threadgroup != nullptr && __stop_gf_threadgroup != nullptr) {
        std::memset(__start_gf_threadgroup, 0xFF,
                    static_cast<std::size_t>(__stop_gf_threadgroup - __start_gf_threadgroup));
    }
}

// getcontext/swapcontext "return twice": keep them in small functions of their own so that
// no loop variable of the scheduler lives across them.
__attribute__((noinline)) inline void prepare_lane(group_run& group, uint t) {
    lane& l = group.lanes[t];
    l = lane();
    if (getcontext(&l.context) != 0) fatal("getcontext failed");
    l.context.uc_stack.ss_sp = stacks().get(t);
    l.context.uc_stack.ss_size = stacks().size;
    l.context.uc_link = &group.scheduler;
    makecontext(&l.context, lane_entry, 0);
}

__attribute__((noinline)) inline void resume_lane(group_run& group, uint t) {
    group.current = t;
    if (swapcontext(&group.scheduler, &group.lanes[t].context) != 0) fatal("swapcontext failed");
}

inline void dispatch_impl(uint groups, uint threads,
                          void (*call)(const void*, const thread_info&), const void* body) {
    if (threads == 0) fatal("dispatch with 0 threads per threadgroup");
    if (active_group() != nullptr) fatal("nested dispatch");
    const uint width = simd_width();
    const bool descending = descending_order();
    group_run group;
    group.call = call;
    group.body = body;
    group.descending = descending;
    group.lanes.resize(threads);
    group.infos.resize(threads);
    for (uint g = 0; g < groups; ++g) {
        poison_threadgroup_memory();
        for (uint t = 0; t < threads; ++t) {
            thread_info& info = group.infos[t];
            info.grid_pos = g * threads + t;
            info.tg_index = t;
            info.group = g;
            info.tg_size = threads;
            info.groups = groups;
            info.grid_size = groups * threads;
            info.simd_lane = t % width;
            info.simd_group = t / width;
            info.simd_width = width;
            info.simd_groups = (threads + width - 1) / width;
            prepare_lane(group, t);
        }
        active_group() = &group;
        uint live = threads;
        while (live > 0) {
            bool ran = false;
            for (uint k = 0; k < threads; ++k) {
                const uint t = descending ? threads - 1 - k : k;
                if (group.lanes[t].state != lane_state::runnable) continue;
                resume_lane(group, t);
                ran = true;
            }
            live = 0;
            for (const lane& l : group.lanes) live += l.state != lane_state::finished;
            if (live == 0) break;
            if (!release(group) && !ran) {
                fatal("deadlock in threadgroup %u: threads wait at a threadgroup_barrier "
                      "while others wait at a simd_sum", g);
            }
        }
        active_group() = nullptr;
    }
}

/// Run ``body`` as a 1-D grid of ``groups`` threadgroups of ``threads`` threads
/// (dispatchThreadgroups). ``body(const thread_info&)`` receives each thread's position
/// arguments and calls the kernel with them.
template <class Body>
inline void dispatch(uint groups, uint threads, const Body& body) {
    dispatch_impl(groups, threads,
                  [](const void* b, const thread_info& info) {
                      (*static_cast<const Body*>(b))(info);
                  },
                  &body);
}

}  // namespace gf_shim

namespace metal {

inline void threadgroup_barrier(mem_flags flags, const char* file, int line) {
    gf_shim::lane& me = gf_shim::current_lane("threadgroup_barrier");
    (void)flags;
    me.file = file;
    me.line = line;
    me.barriers += 1;
    me.state = gf_shim::lane_state::at_barrier;
    gf_shim::yield_to_scheduler();
}

inline float simd_sum(float value, const char* file, int line) {
    gf_shim::lane& me = gf_shim::current_lane("simd_sum");
    me.file = file;
    me.line = line;
    me.simds += 1;
    me.simd_in = value;
    me.state = gf_shim::lane_state::at_simd;
    gf_shim::yield_to_scheduler();
    return gf_shim::current_lane("simd_sum").simd_out;
}

}  // namespace metal

// -------------------------------------------------------------------------------- MSL words
// Defined last, after every standard header, so that they only touch the kernel source.
#define kernel
#define device
#define thread
#define constant const
#define threadgroup static __attribute__((section("gf_threadgroup"), aligned(16)))

// Attributes: `[[buffer(0)]]` becomes `[[]]`, an empty attribute list.
#define buffer(index)
#define max_total_threads_per_threadgroup(count)
#define thread_position_in_grid
#define thread_position_in_threadgroup
#define thread_index_in_threadgroup
#define threadgroup_position_in_grid
#define threads_per_threadgroup
#define threadgroups_per_grid
#define threads_per_grid
#define thread_index_in_simdgroup
#define simdgroup_index_in_threadgroup
#define threads_per_simdgroup
#define simdgroups_per_threadgroup

// Metal has no double: any use in kernel code fails to compile.
#define double gf_shim_error_metal_has_no_double
