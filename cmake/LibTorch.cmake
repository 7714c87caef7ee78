# LibTorch comes from the PyPI torch wheel in the project venv, located through torch.utils.cmake_prefix_path.
# The wheel is a CUDA build whose TorchConfig requires a CUDA toolkit; a CPU engine needs none of libtorch_cuda's
# dependencies, so by default we link libtorch_cpu and libc10 directly. INTROSPECT_TORCH_CUDA adds the CUDA side.
set(INTROSPECT_VENV "$ENV{HOME}/.cache/introspect/venv" CACHE PATH "The virtualenv holding the torch wheel")
option(INTROSPECT_TORCH_CUDA "Also link libtorch_cuda and libc10_cuda (GPU machines)" OFF)

find_program(INTROSPECT_PYTHON NAMES python3 python PATHS ${INTROSPECT_VENV}/bin NO_DEFAULT_PATH)
if(NOT INTROSPECT_PYTHON)
  message(FATAL_ERROR "No Python in ${INTROSPECT_VENV}/bin: run scripts/setup.sh, or pass -DINTROSPECT_VENV=...")
endif()
execute_process(
  COMMAND ${INTROSPECT_PYTHON} -c
    "import torch, torch.utils; print(torch.utils.cmake_prefix_path); print(torch.__version__.split('+')[0]); print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"
  OUTPUT_VARIABLE _torch_info RESULT_VARIABLE _torch_rc ERROR_VARIABLE _torch_err OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT _torch_rc EQUAL 0)
  message(FATAL_ERROR "Cannot import torch from ${INTROSPECT_PYTHON}:\n${_torch_err}")
endif()
string(REPLACE "\n" ";" _torch_info "${_torch_info}")
list(GET _torch_info 0 _torch_cmake_prefix)
list(GET _torch_info 1 INTROSPECT_TORCH_VERSION)
list(GET _torch_info 2 _torch_cxx11_abi)
get_filename_component(TORCH_ROOT "${_torch_cmake_prefix}/../.." ABSOLUTE)
if(INTROSPECT_TORCH_VERSION VERSION_LESS 2.4)
  message(FATAL_ERROR "LibTorch ${INTROSPECT_TORCH_VERSION} is too old; introspect needs 2.4 or newer")
endif()

set(_torch_libs torch_cpu c10)
if(INTROSPECT_TORCH_CUDA)
  list(APPEND _torch_libs torch_cuda c10_cuda)
endif()
add_library(introspect_torch INTERFACE)
foreach(lib ${_torch_libs})
  find_library(_torch_${lib} ${lib} PATHS ${TORCH_ROOT}/lib NO_DEFAULT_PATH REQUIRED)
  target_link_libraries(introspect_torch INTERFACE ${_torch_${lib}})
endforeach()
if(INTROSPECT_TORCH_CUDA)
  # libtorch_cuda registers the CUDA backend from static initialisers: keep it even if no symbol is referenced.
  target_link_options(introspect_torch INTERFACE "LINKER:--no-as-needed")
endif()
target_include_directories(introspect_torch SYSTEM INTERFACE
  ${TORCH_ROOT}/include ${TORCH_ROOT}/include/torch/csrc/api/include)
target_compile_definitions(introspect_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${_torch_cxx11_abi})
message(STATUS "LibTorch ${INTROSPECT_TORCH_VERSION} from ${TORCH_ROOT} (${_torch_libs})")

# The CUDA side of the wheel as its own target, for the GPU binaries (kernel tests, kernel lab, GPU step bench).
find_library(_torch_cuda_lib torch_cuda PATHS ${TORCH_ROOT}/lib NO_DEFAULT_PATH)
find_library(_c10_cuda_lib c10_cuda PATHS ${TORCH_ROOT}/lib NO_DEFAULT_PATH)
if(_torch_cuda_lib AND _c10_cuda_lib AND INTROSPECT_HAVE_CUDA)
  add_library(introspect_torch_cuda INTERFACE)
  # libtorch_cuda registers the CUDA backend from static initialisers: keep it even if no symbol is referenced.
  target_link_libraries(introspect_torch_cuda INTERFACE introspect_torch "-Wl,--no-as-needed" ${_torch_cuda_lib}
    ${_c10_cuda_lib} "-Wl,--as-needed" CUDA::cudart)
  target_compile_definitions(introspect_torch_cuda INTERFACE INTROSPECT_TORCH_CUDA=1)
endif()
