// What a rank can tell about its peers when a collective runs past its deadline: every rank's pid and host
// are exchanged when the communicator starts, and peers on the same host are looked up in /proc.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "introspect/dist/communicator.h"

namespace introspect::dist {

struct Peer {
  int64_t pid = 0;
  std::string host;
};

// Collective: every rank's pid and host name, in rank order.
std::vector<Peer> exchange_peers(Communicator& comm);

// The CollectiveError text for `op` (with its sequence number) that waited `timeout_s` on rank `self`: each
// other rank on this host is reported as exited, stopped or running; ranks elsewhere as not checkable here.
std::string timeout_message(const std::vector<Peer>& peers, int self, const std::string& op, uint64_t sequence,
                            double timeout_s);

}  // namespace introspect::dist
