# Locate OpenBLAS, preferring Debian's OpenMP build: called from inside our own
# OpenMP regions it runs single-threaded instead of oversubscribing the cores.
find_path(CBLAS_INCLUDE_DIR cblas.h PATHS /usr/include/x86_64-linux-gnu /usr/include/openblas /usr/include)
find_library(OPENBLAS_LIBRARY NAMES libopenblas.so.0 openblas
  PATHS /usr/lib/x86_64-linux-gnu/openblas-openmp NO_DEFAULT_PATH)
if(NOT OPENBLAS_LIBRARY)
  find_library(OPENBLAS_LIBRARY NAMES openblas REQUIRED)
endif()
message(STATUS "castor: OpenBLAS ${OPENBLAS_LIBRARY}")
add_library(castor_openblas INTERFACE)
target_include_directories(castor_openblas INTERFACE ${CBLAS_INCLUDE_DIR})
target_link_libraries(castor_openblas INTERFACE ${OPENBLAS_LIBRARY})
