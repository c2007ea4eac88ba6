// metal_shim_end.hpp — include after the kernel source: removes the MSL words that
// metal_shim.hpp defines as macros, so that host (harness) code after it is plain C++ again.
#undef kernel
#undef device
#undef thread
#undef constant
#undef threadgroup
#undef buffer
#undef max_total_threads_per_threadgroup
#undef thread_position_in_grid
#undef thread_position_in_threadgroup
#undef thread_index_in_threadgroup
#undef threadgroup_position_in_grid
#undef threads_per_threadgroup
#undef threadgroups_per_grid
#undef threads_per_grid
#undef thread_index_in_simdgroup
#undef simdgroup_index_in_threadgroup
#undef threads_per_simdgroup
#undef simdgroups_per_threadgroup
#undef double
