// main() of the MPI test executables (tests/*/*_mpi_test.cpp, run under mpirun): MPI is
// initialised once for all tests, every rank reports, and the exit code is the worst over
// all ranks, so a failure on any rank fails the test.
#include <gtest/gtest.h>

#include "parallel/mpi_comm.h"

int main(int argc, char** argv) {
  castor::parallel::MpiSession mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rc = RUN_ALL_TESTS();
  MPI_Allreduce(MPI_IN_PLACE, &rc, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return rc;
}
