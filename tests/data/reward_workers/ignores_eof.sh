#!/bin/sh
# A worker that answers 2, writes its pid to the file named by $1, and does not exit when its stdin closes:
# shutdown has to kill it.
echo $$ > "$1"
while IFS= read -r line; do
  echo '{"reward": 2}'
done
exec sleep 3600
