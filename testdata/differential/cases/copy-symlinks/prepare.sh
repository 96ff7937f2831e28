ln -s f link
ln -s dir dirlink
ln -s /nonexistent dangling
ln -s ../../escape up
