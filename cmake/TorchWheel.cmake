# libtorch from the pinned PyPI torch wheel.
#
# The wheel's TorchConfig.cmake insists on a local CUDA toolkit whose version matches the wheel's
# (it probes nvcc and links the system's libcudart/libnccl, which breaks here). We only need the
# headers and the shared libraries the wheel ships, so we build an imported target from the wheel:
# TORCH_CMAKE_PREFIX is `python -c 'import torch; print(torch.utils.cmake_prefix_path)'`.
# libtorch_cuda is linked with --no-as-needed so the CUDA backend registers itself when a GPU is
# present; on a machine without one torch::cuda::is_available() is false and the CPU path runs.
if(NOT TORCH_CMAKE_PREFIX)
  find_package(Python3 COMPONENTS Interpreter REQUIRED)
  execute_process(COMMAND ${Python3_EXECUTABLE} -c "import torch; print(torch.utils.cmake_prefix_path)"
                  OUTPUT_VARIABLE TORCH_CMAKE_PREFIX OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "torch not importable: run scripts/setup.sh or pass -DTORCH_CMAKE_PREFIX=...")
  endif()
endif()
get_filename_component(TORCH_ROOT "${TORCH_CMAKE_PREFIX}/../.." ABSOLUTE)
if(NOT EXISTS "${TORCH_ROOT}/include/torch/csrc/api/include/torch/torch.h")
  message(FATAL_ERROR "no libtorch headers under ${TORCH_ROOT}")
endif()
get_filename_component(_site "${TORCH_ROOT}/.." ABSOLUTE)
file(GLOB _nv_libdirs LIST_DIRECTORIES true "${_site}/nvidia/*/lib")
string(JOIN ":" _rpath_link ${_nv_libdirs})

add_library(torch_wheel INTERFACE)
target_include_directories(torch_wheel SYSTEM INTERFACE "${TORCH_ROOT}/include"
                           "${TORCH_ROOT}/include/torch/csrc/api/include")
target_compile_definitions(torch_wheel INTERFACE _GLIBCXX_USE_CXX11_ABI=1)
set(_libs "-Wl,--no-as-needed" "${TORCH_ROOT}/lib/libtorch.so" "${TORCH_ROOT}/lib/libtorch_cpu.so"
          "${TORCH_ROOT}/lib/libc10.so")
if(EXISTS "${TORCH_ROOT}/lib/libtorch_cuda.so")
  list(APPEND _libs "${TORCH_ROOT}/lib/libtorch_cuda.so" "${TORCH_ROOT}/lib/libc10_cuda.so")
endif()
list(APPEND _libs "-Wl,--as-needed" "-Wl,-rpath,${TORCH_ROOT}/lib")
if(_rpath_link)
  list(APPEND _libs "-Wl,-rpath-link,${_rpath_link}")
endif()
target_link_libraries(torch_wheel INTERFACE ${_libs})
message(STATUS "libtorch from wheel: ${TORCH_ROOT}")
