"""What an image becomes besides one embedding: the views that are embedded, and the ORB
local features and colour signatures that verification compares."""
