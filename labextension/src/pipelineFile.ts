/**
 * "Schedule pipeline" in the file browser's context menu, on a file named pipeline.yaml or
 * ``*.pipeline.yaml`` (``logic/pipelineFile.ts`` ``isPipelineFile``).
 *
 * The menu item is registered for every file item of the listing
 * (``.jp-DirListing-item[data-isdir="false"]``) and shown only when the one selected item
 * is such a file: the file browser's ``data-file-type`` names a file type, not a file name.
 * The selection is read from the default file browser in the left area (id
 * ``filebrowser``) through the two members used here, so the extension needs no
 * dependency on @jupyterlab/filebrowser's tokens.
 */
import type { ILabShell, JupyterFrontEnd } from '@jupyterlab/application';

import type { SchedulerService } from './api/scheduler';
import { schedulePipelineFile } from './dialogs/schedulePipeline';
import { isPipelineFile } from './logic/pipelineFile';

export const SCHEDULE_PIPELINE_COMMAND = 'shipyard:schedule-pipeline';

/** An item of the file browser's listing: ``path`` is relative to the server's root. */
interface IListedItem {
  name: string;
  path: string;
  type: string;
}

/** The members of JupyterLab's FileBrowser read here. */
interface IFileBrowserLike {
  selectedItems(): Iterable<IListedItem>;
}

/** The one item selected in the default file browser, or null (none, or several). */
function selectedItem(labShell: ILabShell): IListedItem | null {
  for (const widget of labShell.widgets('left')) {
    if (widget.id !== 'filebrowser') {
      continue;
    }
    const browser = widget as unknown as Partial<IFileBrowserLike>;
    if (typeof browser.selectedItems !== 'function') {
      return null;
    }
    const items = Array.from(browser.selectedItems());
    return items.length === 1 ? items[0] : null;
  }
  return null;
}

/** The selected pipeline file, or null when the selection is not one. */
function selectedPipelineFile(labShell: ILabShell): IListedItem | null {
  const item = selectedItem(labShell);
  return item && item.type !== 'directory' && isPipelineFile(item.name) ? item : null;
}

/** Add the command and its context-menu item. */
export function registerSchedulePipeline(
  app: JupyterFrontEnd,
  labShell: ILabShell,
  scheduler: SchedulerService,
  onScheduled: () => void
): void {
  app.commands.addCommand(SCHEDULE_PIPELINE_COMMAND, {
    label: 'Schedule pipeline',
    caption: "Add this pipeline to Shipyard's scheduler (or read it again if it is there)",
    isVisible: () => selectedPipelineFile(labShell) !== null,
    execute: async args => {
      const path =
        typeof args.path === 'string' ? args.path : (selectedPipelineFile(labShell)?.path ?? '');
      if (path) {
        await schedulePipelineFile(scheduler, path, onScheduled);
      }
    }
  });
  app.contextMenu.addItem({
    command: SCHEDULE_PIPELINE_COMMAND,
    selector: '.jp-DirListing-item[data-isdir="false"]',
    rank: 60
  });
}
