#!/bin/sh
# A shell worker answering 1 to every line, except that a line holding HANG starts a child that never ends:
# killing only the shell would leave the sleep behind, so this checks the whole process group is killed.
# Appends its pid (its process group's id) to the file named by $1.
echo $$ >> "$1"
while IFS= read -r line; do
  case "$line" in
    *HANG*) sleep 3600 ;;
  esac
  echo '{"reward": 1}'
done
