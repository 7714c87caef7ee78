# Route C, C++ and CUDA compiles through ccache when it is installed (rebuilds on 2 cores are the bottleneck).
find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM)
  foreach(lang C CXX CUDA)
    set(CMAKE_${lang}_COMPILER_LAUNCHER ${CCACHE_PROGRAM})
  endforeach()
  message(STATUS "ccache: ${CCACHE_PROGRAM}")
endif()
