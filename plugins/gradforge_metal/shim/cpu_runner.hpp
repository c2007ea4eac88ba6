// cpu_runner.hpp — host side of the CPU verification runner for gradforge's Metal backend.
// The generated harness (plugin templates/harness.cpp.j2) includes the kernels through the
// shim, then this file, and speaks gradforge's verification protocol on stdin/stdout
// (gradforge/protocol.py). Launch shapes come from the command line as T:G pairs
// (threads per threadgroup : most threadgroups of the reduction); case k uses pair k mod count.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace gf_runner {

struct grid {
    uint threads;     // threads per threadgroup
    uint max_groups;  // most threadgroups of the reduction kernel
};

[[noreturn]] __attribute__((format(printf, 1, 2))) inline void fail(const char* format, ...) {
    std::va_list args;
    va_start(args, format);
    std::fputs("metal runner: ", stderr);
    std::vfprintf(stderr, format, args);
    std::fputs("\n", stderr);
    va_end(args);
    std::exit(2);
}

inline std::vector<grid> parse_grids(int argc, char** argv, uint capacity) {
    std::vector<grid> grids;
    for (int a = 1; a < argc; ++a) {
        unsigned long threads = 0, groups = 0;
        char tail = '\0';
        if (std::sscanf(argv[a], "%lu:%lu%c", &threads, &groups, &tail) != 2 || threads == 0 ||
            groups == 0) {
            fail("bad grid '%s', expected THREADS:GROUPS", argv[a]);
        }
        if (threads > capacity) {
            fail("threadgroup size %lu exceeds the kernels' max_total_threads_per_threadgroup "
                 "(%u)", threads, capacity);
        }
        grids.push_back({static_cast<uint>(threads), static_cast<uint>(groups)});
    }
    if (grids.empty()) grids.push_back({capacity < 32u ? capacity : 32u, 4u});
    return grids;
}

inline double read_number() {
    double value = 0.0;
    if (std::scanf("%lf", &value) != 1) fail("unexpected end of input");
    return value;
}

inline uint read_count() {
    double value = read_number();
    if (value < 0.0 || value > 4294967295.0) fail("bad count");
    return static_cast<uint>(value);
}

inline float read_float() { return static_cast<float>(read_number()); }

inline std::vector<float> read_floats(std::size_t count) {
    std::vector<float> values(count);
    for (float& v : values) v = read_float();
    return values;
}

inline void write_float(float value) { std::printf("%.17g\n", static_cast<double>(value)); }

inline void write_floats(const std::vector<float>& values) {
    for (float v : values) write_float(v);
}

inline uint ceil_div(uint a, uint b) { return (a + b - 1) / b; }

}  // namespace gf_runner
